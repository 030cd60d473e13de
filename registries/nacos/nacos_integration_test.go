package nacos

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
)

// Pushes from the server arrive about once a second; listings every second in these tests.
const settle = 15 * time.Second

func instanceAt(s catalog.Service, address string) (catalog.Instance, bool) {
	for _, in := range s.Instances {
		if in.Address == address {
			return in, true
		}
	}
	return catalog.Instance{}, false
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

	p, rec := startPlugin(t, addr, map[string]string{"namespaces": ns, "listInterval": "1s"})
	ordersKey := ns + "/DEFAULT_GROUP/" + orders
	dubboKey := "dubbo:" + iface
	rec.WaitState(t, settle, "the first snapshot", func(s *sdktest.State) bool { return s.Snapshots == 1 })
	rec.WaitState(t, settle, "orders and the Dubbo interface", func(s *sdktest.State) bool {
		return sdktest.HasEndpoints(ordersKey, "10.0.0.1:8080", "10.0.0.2:9090")(s) && sdktest.HasEndpoints(dubboKey, "10.0.1.1:20880", "10.0.1.2:20881")(s)
	})

	svc, _ := rec.Service(ordersKey)
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

	dsvc, _ := rec.Service(dubboKey)
	if dsvc.Host != strings.ToLower(iface) {
		t.Errorf("Dubbo host = %q, want %q", dsvc.Host, strings.ToLower(iface))
	}
	d1, _ := instanceAt(dsvc, "10.0.1.1")
	if want := map[string]string{"version": "1.0.0", "group": "blue", "application": "greeter"}; d1.Protocol != "dubbo" || !maps.Equal(d1.Labels, want) {
		t.Errorf("provider 10.0.1.1 = %+v, want protocol dubbo and labels %v", d1, want)
	}
	keys := strings.Join(slices.Sorted(maps.Keys(rec.State().Services)), " ")
	if strings.Contains(keys, "consumers") || strings.Contains(keys, "elsewhere") || strings.Count(keys, " ") != 1 {
		t.Errorf("services = %s, want only orders and the Dubbo interface", keys)
	}

	// A new service is found by the next listing.
	billing := uniqueName("billing")
	a.Register(nacostest.Instance(billing, "", "10.0.4.1", 8080, nil))
	rec.WaitState(t, settle, "the new service", sdktest.HasEndpoints(ns+"/DEFAULT_GROUP/"+billing, "10.0.4.1:8080"))

	// Deregistering removes an endpoint.
	a.Deregister(o2)
	rec.WaitState(t, settle, "10.0.0.2 gone", sdktest.HasEndpoints(ordersKey, "10.0.0.1:8080"))

	// Weight changes are pushed.
	o1.Weight = 3
	a.Update(o1)
	rec.WaitState(t, settle, "weight 300", func(s *sdktest.State) bool {
		svc, ok := s.Services[ordersKey]
		return ok && len(svc.Instances) == 1 && svc.Instances[0].Weight == 300
	})

	// A disabled instance receives no traffic: the service has no endpoint left.
	o1.Enable = false
	a.Update(o1)
	rec.WaitState(t, settle, "orders deleted", sdktest.Absent(ordersKey))
	o1.Enable = true
	a.Update(o1)
	rec.WaitState(t, settle, "orders back", sdktest.HasEndpoints(ordersKey, "10.0.0.1:8080"))

	// One subscription per listed service but the Dubbo consumer, whatever else the server
	// lists; subscriptions checked again are renewed, not added.
	list, err := a.GetAllServicesInfo(vo.GetAllServiceInfoParam{GroupName: defaultGroup, PageNo: 1, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.stats.subscriptions.Load(), int64(len(list.Doms)-1); got != want {
		t.Errorf("subscriptions = %d, want %d (the services listed: %v, less the consumer)", got, want, list.Doms)
	}
	if p.stats.verifications.Load() == 0 {
		t.Errorf("no subscription was checked again")
	}
	st := rec.State()
	if !st.Connected || st.Deletes != 1 || st.Snapshots != 1 {
		t.Errorf("healthy=%v deletes=%d snapshots=%d, want true, 1, 1", st.Connected, st.Deletes, st.Snapshots)
	}
	for item, reason := range st.Rejected {
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

	_, rec := startPlugin(t, addr, map[string]string{"namespaces": ns1 + ":g1;" + ns2, "listInterval": "1s"})
	want := map[string]string{
		ns1 + "/g1/" + svc:              "10.1.0.2:80",
		ns2 + "/DEFAULT_GROUP/" + svc:   "10.2.0.1:80",
		ns2 + "/DEFAULT_GROUP/x_" + svc: "10.2.0.3:80",
	}
	rec.WaitState(t, settle, "the selected services", func(s *sdktest.State) bool {
		if len(s.Services) != len(want) {
			return false
		}
		for k, ep := range want {
			if !sdktest.HasEndpoints(k, ep)(s) {
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
		if s, _ := rec.Service(k); s.Host != h {
			t.Errorf("host of %s = %q, want %q", k, s.Host, h)
		}
	}
}

// A server without Nacos's console API cannot list every namespace: the plugin says so
// instead of reporting an empty registry.
func TestAllNamespacesWithoutConsoleAPI(t *testing.T) {
	addr := nacosAddr(t)
	_, rec := startPlugin(t, addr, map[string]string{"namespaces": "*"})
	rec.WaitState(t, settle, "an unhealthy status naming the console API", func(s *sdktest.State) bool {
		return !s.Connected && strings.Contains(s.HealthMessage, "console API")
	})
	if rec.State().Snapshots != 0 {
		t.Errorf("a snapshot was sent without a complete listing")
	}
}

// A group of more than one page of services is listed whole, and listing it again and again
// removes nothing: Polaris orders every page request anew, so its pages overlap.
func TestGroupLargerThanOnePageIsListedWhole(t *testing.T) {
	addr := nacosAddr(t)
	ns := uniqueName("pages")
	app := nacostest.NewApp(t, addr, ns)
	const services = servicePageSize + 20
	registerServices(t, app, services)
	awaitListed(t, app, ns, services)

	_, rec := startPlugin(t, addr, map[string]string{"namespaces": ns, "listInterval": "200ms"})
	rec.WaitState(t, time.Minute, fmt.Sprintf("all %d services", services), func(s *sdktest.State) bool {
		return s.Synced && len(s.Services) == services
	})
	mark := rec.Mark()
	time.Sleep(3 * time.Second) // 15 listings
	if n := rec.Count(mark, sdktest.Delete); n > 0 {
		t.Fatalf("%d services deleted while the server still lists them:\n%s", n, rec.Dump(mark))
	}
}
