package nacos

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
)

// Pushes from the server arrive about once a second; listings every second in these tests.
const settle = 15 * time.Second

func instanceAt(s model.Service, address string) (model.Instance, bool) {
	for _, in := range s.Instances {
		if in.Address == address {
			return in, true
		}
	}
	return model.Instance{}, false
}

func TestWatchServer(t *testing.T) {
	addr := nacosAddr(t)
	ns := uniqueName("it")
	a := nacostest.NewApp(t, addr, ns)

	orders := uniqueName("orders")
	o1 := nacostest.Instance(orders, "", "10.0.0.1", 8080, map[string]string{
		"protocol": "http", "version": "v1", "timestamp": "1700000000", "db.password": "hunter2", "bad label": "x",
	})
	o2 := nacostest.Instance(orders, "", "10.0.0.2", 9090, nil)
	a.Register(o1)
	a.Register(o2)
	iface := "com.example." + strings.ReplaceAll(uniqueName("Greeter"), "-", "")
	md := nacostest.DubboMetadata(iface, "greeter", "1.0.0", "blue")
	md["token"] = "s3cr3t-t0ken" // a Dubbo credential: never a label
	p1 := nacostest.Instance(nacostest.DubboProviders(iface, "1.0.0", "blue"), "", "10.0.1.1", 20880, md)
	p2 := nacostest.Instance(nacostest.DubboProviders(iface, "", ""), "", "10.0.1.2", 20881, nacostest.DubboMetadata(iface, "greeter", "", ""))
	a.Register(p1)
	a.Register(p2)
	consumer := nacostest.Instance("consumers:"+iface+":1.0.0:blue", "", "10.0.2.1", 1, map[string]string{"side": "consumer"})
	a.Register(consumer)
	a.Register(nacostest.Instance(uniqueName("elsewhere"), "other-group", "10.0.3.1", 80, nil))

	r := startPlugin(t, addr, map[string]string{"namespaces": ns, "listInterval": "1s"})
	ordersKey := ns + "/DEFAULT_GROUP/" + orders
	dubboKey := "dubbo:" + iface
	r.rec.wait(t, settle, "the first snapshot", func(r *recorder) bool { return r.snapshots == 1 })
	r.rec.wait(t, settle, "orders and the Dubbo interface", func(r *recorder) bool {
		return hasEndpoints(ordersKey, "10.0.0.1:8080", "10.0.0.2:9090")(r) && hasEndpoints(dubboKey, "10.0.1.1:20880", "10.0.1.2:20881")(r)
	})

	svc, _ := r.rec.service(ordersKey)
	if want := orders + "." + ns + ".nacos"; svc.Host != want {
		t.Errorf("orders host = %q, want %q", svc.Host, want)
	}
	in1, _ := instanceAt(svc, "10.0.0.1")
	if in1.Protocol != "http" || in1.Weight != 100 || !maps.Equal(in1.Labels, map[string]string{"version": "v1"}) {
		t.Errorf("10.0.0.1 = %+v, want protocol http, weight 100, labels only version=v1", in1)
	}
	if in2, _ := instanceAt(svc, "10.0.0.2"); in2.Protocol != defaultProtocol || len(in2.Labels) != 0 {
		t.Errorf("10.0.0.2 = %+v, want the default protocol and no labels (server bookkeeping filtered)", in2)
	}

	dsvc, _ := r.rec.service(dubboKey)
	if dsvc.Host != strings.ToLower(iface) {
		t.Errorf("Dubbo host = %q, want %q", dsvc.Host, strings.ToLower(iface))
	}
	d1, _ := instanceAt(dsvc, "10.0.1.1")
	if want := map[string]string{"version": "1.0.0", "group": "blue", "application": "greeter"}; d1.Protocol != "dubbo" || !maps.Equal(d1.Labels, want) {
		t.Errorf("provider 10.0.1.1 = %+v, want protocol dubbo and labels %v", d1, want)
	}
	r.rec.mu.Lock()
	keys := strings.Join(slices.Sorted(maps.Keys(r.rec.state)), " ")
	r.rec.mu.Unlock()
	if strings.Contains(keys, "consumers") || strings.Contains(keys, "elsewhere") || strings.Count(keys, " ") != 1 {
		t.Errorf("services = %s, want only orders and the Dubbo interface", keys)
	}

	// A new service is found by the next listing.
	billing := uniqueName("billing")
	a.Register(nacostest.Instance(billing, "", "10.0.4.1", 8080, nil))
	r.rec.wait(t, settle, "the new service", hasEndpoints(ns+"/DEFAULT_GROUP/"+billing, "10.0.4.1:8080"))

	// Deregistering removes an endpoint.
	a.Deregister(o2)
	r.rec.wait(t, settle, "10.0.0.2 gone", hasEndpoints(ordersKey, "10.0.0.1:8080"))

	// Weight changes are pushed.
	o1.Weight = 3
	a.Update(o1)
	r.rec.wait(t, settle, "weight 300", func(r *recorder) bool {
		s, ok := r.state[ordersKey]
		return ok && len(s.Instances) == 1 && s.Instances[0].Weight == 300
	})

	// A disabled instance receives no traffic: the service has no endpoint left.
	o1.Enable = false
	a.Update(o1)
	r.rec.wait(t, settle, "orders deleted", absent(ordersKey))
	o1.Enable = true
	a.Update(o1)
	r.rec.wait(t, settle, "orders back", hasEndpoints(ordersKey, "10.0.0.1:8080"))

	// One subscription per listed service but the Dubbo consumer, whatever else the server
	// lists; subscriptions checked again are renewed, not added.
	list, err := a.GetAllServicesInfo(vo.GetAllServiceInfoParam{GroupName: defaultGroup, PageNo: 1, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.p.stats.subscriptions.Load(), int64(len(list.Doms)-1); got != want {
		t.Errorf("subscriptions = %d, want %d (the services listed: %v, less the consumer)", got, want, list.Doms)
	}
	if r.p.stats.verifications.Load() == 0 {
		t.Errorf("no subscription was checked again")
	}
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	if !r.rec.healthy || r.rec.deletes != 1 || r.rec.snapshots != 1 {
		t.Errorf("healthy=%v deletes=%d snapshots=%d, want true, 1, 1", r.rec.healthy, r.rec.deletes, r.rec.snapshots)
	}
	for item, reason := range r.rec.rejected {
		t.Errorf("unexpected rejection of %s: %s", item, reason)
	}
}

func TestSelectNamespacesAndGroups(t *testing.T) {
	addr := nacosAddr(t)
	ns1, ns2 := uniqueName("sel"), uniqueName("sel")
	a1, a2 := nacostest.NewApp(t, addr, ns1), nacostest.NewApp(t, addr, ns2)
	svc := uniqueName("catalog")
	a1.Register(nacostest.Instance(svc, "", "10.1.0.1", 80, nil))      // ns1, default group: not selected
	a1.Register(nacostest.Instance(svc, "g1", "10.1.0.2", 80, nil))    // ns1, g1: selected
	a1.Register(nacostest.Instance(svc, "g2", "10.1.0.3", 80, nil))    // ns1, g2: not selected
	a2.Register(nacostest.Instance(svc, "", "10.2.0.1", 80, nil))      // ns2, default group: selected
	a2.Register(nacostest.Instance(svc, "g1", "10.2.0.2", 80, nil))    // ns2, g1: not selected
	a2.Register(nacostest.Instance("x_"+svc, "", "10.2.0.3", 80, nil)) // ns2: selected, host sanitised

	r := startPlugin(t, addr, map[string]string{"namespaces": ns1 + ":g1;" + ns2, "listInterval": "1s"})
	want := map[string]string{
		ns1 + "/g1/" + svc:              "10.1.0.2:80",
		ns2 + "/DEFAULT_GROUP/" + svc:   "10.2.0.1:80",
		ns2 + "/DEFAULT_GROUP/x_" + svc: "10.2.0.3:80",
	}
	r.rec.wait(t, settle, "the selected services", func(r *recorder) bool {
		if len(r.state) != len(want) {
			return false
		}
		for k, ep := range want {
			if !hasEndpoints(k, ep)(r) {
				return false
			}
		}
		return true
	})
	hosts := map[string]string{
		ns1 + "/g1/" + svc:              svc + ".g1." + ns1 + ".nacos",
		ns2 + "/DEFAULT_GROUP/" + svc:   svc + "." + ns2 + ".nacos",
		ns2 + "/DEFAULT_GROUP/x_" + svc: "x-" + svc + "." + ns2 + ".nacos",
	}
	for k, h := range hosts {
		if s, _ := r.rec.service(k); s.Host != h {
			t.Errorf("host of %s = %q, want %q", k, s.Host, h)
		}
	}
}

// A server without Nacos's console API cannot list every namespace: the plugin says so
// instead of reporting an empty registry.
func TestAllNamespacesWithoutConsoleAPI(t *testing.T) {
	addr := nacosAddr(t)
	r := startPlugin(t, addr, map[string]string{"namespaces": "*"})
	r.rec.wait(t, settle, "an unhealthy status naming the console API", func(r *recorder) bool {
		return !r.healthy && strings.Contains(r.healthMsg, "console API")
	})
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	if r.rec.snapshots != 0 {
		t.Errorf("a snapshot was sent without a complete listing")
	}
}
