package zookeeper

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// endpointsOf renders a service's endpoints as sorted "ip:port/protocol v=version" strings.
func endpointsOf(svc sdk.Service) []string {
	var out []string
	for _, in := range svc.Instances {
		out = append(out, fmt.Sprintf("%s:%d/%s v=%s", in.Address, in.Port, in.Protocol, in.Labels["version"]))
	}
	slices.Sort(out)
	return out
}

// upsertOf matches an upsert of key whose endpoints are exactly want.
func upsertOf(key string, want ...string) func(event, map[string]sdk.Service) bool {
	slices.Sort(want)
	return func(ev event, _ map[string]sdk.Service) bool {
		return ev.kind == "upsert" && ev.key == key && slices.Equal(endpointsOf(ev.svc), want)
	}
}

// appInstanceJSON is Dubbo 3 instance data for ip with revision rev, serving dubbo on 20880
// and Triple on 50051.
func appInstanceJSON(app, ip, rev string) string {
	return strings.NewReplacer("192.168.1.10", ip, "a1b2c3d4e5f6", rev, "demo-provider", app).Replace(dubbo3Instance)
}

// TestIntegrationInterfaceMapping: /dubbo/mapping/<interface> turns interfaces into services
// whose endpoints are the mapped applications' instances, restricted by each revision's
// metadata; mapping data changes are watched; in both mode interface-level providers win.
func TestIntegrationInterfaceMapping(t *testing.T) {
	const greeter = "org.apache.dubbo.demo.GreeterService"
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	// demo-provider: two instances of revision a1 whose metadata says DemoService is served on
	// dubbo and Triple and GreeterService (1.0.0, group g1) on Triple only.
	w.ensure(chroot + "/dubbo/metadata/demo-provider/a1")
	w.set("/dubbo/metadata/demo-provider/a1", []byte(dubbo3Metadata))
	w.registerApp("demo-provider", "10.0.0.1", 20880, appInstanceJSON("demo-provider", "10.0.0.1", "a1"))
	w.registerApp("demo-provider", "10.0.0.2", 20880, appInstanceJSON("demo-provider", "10.0.0.2", "a1"))
	// billing: no metadata published.
	w.registerApp("billing", "10.0.1.1", 20880, appInstanceJSON("billing", "10.0.1.1", "b1"))
	for iface, apps := range map[string]string{demoIface: "demo-provider", greeter: "demo-provider", "com.example.Unserved": "demo-provider"} {
		w.ensure(chroot + "/dubbo/mapping/" + iface)
		w.set("/dubbo/mapping/"+iface, []byte(apps))
	}

	r := startPlugin(t, addr+chroot, map[string]string{"mode": "both"}, nil)
	i := r.rec.waitFor(t, 0, wait, "snapshot", isSnapshot)
	snap := map[string]sdk.Service{}
	for _, s := range r.rec.since(i)[0].services {
		snap[s.Key] = s
	}
	checkValid(t, r.rec.since(i)[0].services...)
	if len(snap) != 4 {
		t.Fatalf("snapshot has %d services, want app:billing, app:demo-provider and two mapped interfaces:\n%s", len(snap), r.rec.dump(0))
	}
	demo, greet := snap["mapped:dubbo:"+demoIface], snap["mapped:dubbo:"+greeter]
	if demo.Host != "org.apache.dubbo.demo.demoservice" || greet.Host != "org.apache.dubbo.demo.greeterservice" {
		t.Fatalf("hosts %q and %q, want the lower-cased interfaces", demo.Host, greet.Host)
	}
	if got, want := endpointsOf(demo), []string{"10.0.0.1:20880/dubbo v=", "10.0.0.1:50051/tri v=", "10.0.0.2:20880/dubbo v=", "10.0.0.2:50051/tri v="}; !slices.Equal(got, want) {
		t.Fatalf("DemoService endpoints %q, want %q", got, want)
	}
	if got, want := endpointsOf(greet), []string{"10.0.0.1:50051/tri v=1.0.0", "10.0.0.2:50051/tri v=1.0.0"}; !slices.Equal(got, want) {
		t.Fatalf("GreeterService endpoints %q, want %q (its revision's metadata lists Triple only)", got, want)
	}
	if l := greet.Instances[0].Labels; l["application"] != "demo-provider" || l["revision"] != "a1" || l["group"] != "g1" {
		t.Fatalf("GreeterService labels %v", l)
	}
	if _, ok := snap["mapped:dubbo:com.example.Unserved"]; ok {
		t.Fatal("an interface the revision's metadata does not list became a service")
	}

	// Dubbo appends an application to the mapping: without metadata, all its endpoints serve.
	m := r.rec.mark()
	w.set("/dubbo/mapping/"+greeter, []byte("demo-provider,billing"))
	r.rec.waitFor(t, m, wait, "billing's endpoints added through the mapping", upsertOf("mapped:dubbo:"+greeter,
		"10.0.0.1:50051/tri v=1.0.0", "10.0.0.2:50051/tri v=1.0.0", "10.0.1.1:20880/dubbo v=", "10.0.1.1:50051/tri v="))

	// billing publishes metadata for a new revision and re-registers with it: its instance now
	// serves GreeterService on dubbo only.
	m = r.rec.mark()
	w.ensure(chroot + "/dubbo/metadata/billing/b2")
	w.set("/dubbo/metadata/billing/b2", []byte(`{"app":"billing","revision":"b2","services":{"`+greeter+`:dubbo":{"name":"`+greeter+`","protocol":"dubbo","port":20880}}}`))
	w.set("/services/billing/10.0.1.1:20880", []byte(appInstanceJSON("billing", "10.0.1.1", "b2")))
	r.rec.waitFor(t, m, wait, "billing restricted by its new revision's metadata", upsertOf("mapped:dubbo:"+greeter,
		"10.0.0.1:50051/tri v=1.0.0", "10.0.0.2:50051/tri v=1.0.0", "10.0.1.1:20880/dubbo v="))

	// An application instance going away shrinks every interface mapped to it.
	m = r.rec.mark()
	w.delete("/services/demo-provider/10.0.0.2:20880")
	r.rec.waitFor(t, m, wait, "DemoService shrinks", upsertOf("mapped:dubbo:"+demoIface, "10.0.0.1:20880/dubbo v=", "10.0.0.1:50051/tri v="))

	// Interface-level providers of DemoService take over from the mapping, and hand back.
	m = r.rec.mark()
	p := w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.9", 20880, demoIface, ""))
	r.rec.waitFor(t, m, wait, "interface-level DemoService", upsertWith("dubbo:"+demoIface, 1))
	r.rec.waitFor(t, m, wait, "mapped DemoService withdrawn", deleteOf("mapped:dubbo:"+demoIface))
	m = r.rec.mark()
	w.delete(p)
	r.rec.waitFor(t, m, wait, "mapped DemoService back", upsertOf("mapped:dubbo:"+demoIface, "10.0.0.1:20880/dubbo v=", "10.0.0.1:50051/tri v="))

	// A mapping removed deletes its service; the application's own service stays.
	m = r.rec.mark()
	w.delete("/dubbo/mapping/" + greeter)
	r.rec.waitFor(t, m, wait, "mapped GreeterService deleted", deleteOf("mapped:dubbo:"+greeter))
	if _, ok := r.rec.service("app:billing"); !ok {
		t.Fatal("app:billing went away with the mapping")
	}

	// Malformed metadata is reported; the revision falls back to all its endpoints.
	m = r.rec.mark()
	w.ensure(chroot + "/dubbo/metadata/demo-provider/a2")
	w.set("/dubbo/metadata/demo-provider/a2", []byte(`{"services":{"x":{"name":`))
	w.set("/services/demo-provider/10.0.0.1:20880", []byte(appInstanceJSON("demo-provider", "10.0.0.1", "a2")))
	r.rec.waitFor(t, m, wait, "bad metadata rejected", rejectOf("/dubbo/metadata/demo-provider/a2"))
	r.rec.waitFor(t, m, wait, "DemoService on the new revision", func(ev event, _ map[string]sdk.Service) bool {
		return ev.kind == "upsert" && ev.key == "mapped:dubbo:"+demoIface && len(ev.svc.Instances) == 2 && ev.svc.Instances[0].Labels["revision"] == "a2"
	})
	if d := r.p.stats.duplicateWatches.Load(); d != 0 {
		t.Fatalf("%d watches were set twice", d)
	}
}

// TestIntegrationMappingWatchesDoNotGrow: mappings coming and going leave no watch behind.
func TestIntegrationMappingWatchesDoNotGrow(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.registerApp("demo-provider", "10.0.0.1", 20880, appInstanceJSON("demo-provider", "10.0.0.1", "a1"))
	w.ensure(chroot + "/dubbo/mapping/" + demoIface)
	w.set("/dubbo/mapping/"+demoIface, []byte("demo-provider"))

	r := startPlugin(t, addr+chroot, map[string]string{"mode": "application"}, nil)
	r.rec.waitFor(t, 0, wait, "snapshot", isSnapshot)
	before := r.p.stats.watches.Load()
	for c := range 20 {
		iface := fmt.Sprintf("com.example.Mapped%d", c%3)
		m := r.rec.mark()
		w.ensure(chroot + "/dubbo/mapping/" + iface)
		w.set("/dubbo/mapping/"+iface, []byte("demo-provider"))
		r.rec.waitFor(t, m, wait, "mapping added", upsertWith("mapped:dubbo:"+iface, 2))
		m = r.rec.mark()
		w.set("/dubbo/mapping/"+iface, []byte("other-app"))
		r.rec.waitFor(t, m, wait, "mapping moved away", deleteOf("mapped:dubbo:"+iface))
		m = r.rec.mark()
		w.delete("/dubbo/mapping/" + iface)
		// Nothing to emit: wait until the plugin has read the mapping directory again.
		deadline := time.Now().Add(5 * time.Second)
		for r.p.stats.watches.Load() != before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if ev := r.rec.since(m); len(ev) != 0 {
			t.Fatalf("deleting an unused mapping emitted:\n%s", r.rec.dump(m))
		}
	}
	if after := r.p.stats.watches.Load(); after != before {
		t.Fatalf("watches grew under mapping churn: %d before, %d after", before, after)
	}
	if d := r.p.stats.duplicateWatches.Load(); d != 0 {
		t.Fatalf("%d watches were set twice", d)
	}
}

// TestIntegrationResyncRepairsDrift: a periodic resync sends only what differs from what was
// emitted, and sets no watch twice. The drift is made by editing what the watcher believes it
// emitted, which is what a change missed by a lost watch looks like from the inside.
func TestIntegrationResyncRepairsDrift(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.2", 20880, demoIface, ""))
	w.register("dubbo", "com.example.Other", providerURL("dubbo", "10.0.0.3", 20880, "com.example.Other", ""))
	w.registerApp("demo-provider", "10.0.0.1", 20880, appInstanceJSON("demo-provider", "10.0.0.1", "a1"))
	w.createEphemeral("/dubbo/"+"com.example.Bad/providers", "not-a-url", nil)

	p := New().(*Plugin)
	p.inject = make(chan func(*watcher))
	r := startConfigured(t, p, addr+chroot, map[string]string{"mode": "both"}, nil)
	r.rec.waitFor(t, 0, wait, "snapshot", isSnapshot)
	r.rec.waitFor(t, 0, wait, "bad provider rejected", rejectOf("not-a-url"))
	watches := r.p.stats.watches.Load()

	// resync edits the watcher's state in its loop, makes it resync there and returns after.
	resync := func(drift func(wt *watcher)) {
		t.Helper()
		n := p.stats.resyncs.Load()
		p.inject <- func(wt *watcher) { drift(wt); wt.resyncDue = true }
		p.inject <- func(*watcher) {} // received once the loop is idle again
		if p.stats.resyncs.Load() != n+1 {
			t.Fatalf("%d resyncs ran, want 1", p.stats.resyncs.Load()-n)
		}
	}

	// Nothing drifted: the resync sends nothing and repeats no rejection.
	m := r.rec.mark()
	resync(func(*watcher) {})
	if ev := r.rec.since(m); len(ev) != 0 {
		t.Fatalf("a resync without drift emitted:\n%s", r.rec.dump(m))
	}

	// One endpoint and one whole service missed, one service deleted meanwhile.
	m = r.rec.mark()
	resync(func(wt *watcher) {
		svc := wt.emitted["dubbo:"+demoIface]
		svc.Instances = svc.Instances[:1]
		wt.emitted["dubbo:"+demoIface] = svc
		delete(wt.emitted, "app:demo-provider")
		wt.emitted["dubbo:com.example.Gone"] = sdk.Service{Key: "dubbo:com.example.Gone", Host: "gone", Instances: svc.Instances}
	})
	r.rec.waitFor(t, m, wait, "missing endpoint restored", upsertWith("dubbo:"+demoIface, 2))
	r.rec.waitFor(t, m, wait, "missing service restored", upsertWith("app:demo-provider", 2))
	r.rec.waitFor(t, m, wait, "stale service deleted", deleteOf("dubbo:com.example.Gone"))
	if ev := r.rec.since(m); len(ev) != 3 {
		t.Fatalf("the resync sent %d events, want 3:\n%s", len(ev), r.rec.dump(m))
	}
	if got := p.stats.repaired.Load(); got != 3 {
		t.Fatalf("repaired = %d, want 3", got)
	}
	if got := r.p.stats.watches.Load(); got != watches {
		t.Fatalf("watches %d after resyncs, %d before", got, watches)
	}
	if d := r.p.stats.duplicateWatches.Load(); d != 0 {
		t.Fatalf("%d watches were set twice", d)
	}

	// Changes keep flowing through the watches after a resync.
	m = r.rec.mark()
	w.register("dubbo", "com.example.Other", providerURL("dubbo", "10.0.0.4", 20880, "com.example.Other", ""))
	r.rec.waitFor(t, m, wait, "change after resync", upsertWith("dubbo:com.example.Other", 2))
}
