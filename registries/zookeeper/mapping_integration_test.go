package zookeeper

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/internal/testproxy"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// endpointsOf renders a service's endpoints as sorted "ip:port/protocol v=version" strings.
func endpointsOf(svc catalog.Service) []string {
	var out []string
	for _, in := range svc.Instances {
		out = append(out, fmt.Sprintf("%s:%d/%s v=%s", in.Address, in.Port, in.Protocol, in.Labels["version"]))
	}
	slices.Sort(out)
	return out
}

// upsertOf matches an upsert of key whose endpoints are exactly want.
func upsertOf(key string, want ...string) func(sdktest.Event) bool {
	slices.Sort(want)
	return func(ev sdktest.Event) bool {
		return ev.Kind == sdktest.Upsert && ev.Key == key && slices.Equal(endpointsOf(ev.Service), want)
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

	p := New().(*Plugin)
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{"mode": "both"}})
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	snap := map[string]catalog.Service{}
	for _, s := range found.Services {
		snap[s.Key] = s
	}
	checkValid(t, found.Services...)
	if len(snap) != 4 {
		t.Fatalf("snapshot has %d services, want app:billing, app:demo-provider and two mapped interfaces:\n%s", len(snap), rec.Dump(0))
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
	m := rec.Mark()
	w.set("/dubbo/mapping/"+greeter, []byte("demo-provider,billing"))
	rec.WaitFor(t, m, wait, "billing's endpoints added through the mapping", upsertOf("mapped:dubbo:"+greeter,
		"10.0.0.1:50051/tri v=1.0.0", "10.0.0.2:50051/tri v=1.0.0", "10.0.1.1:20880/dubbo v=", "10.0.1.1:50051/tri v="))

	// billing publishes metadata for a new revision and re-registers with it: its instance now
	// serves GreeterService on dubbo only.
	m = rec.Mark()
	w.ensure(chroot + "/dubbo/metadata/billing/b2")
	w.set("/dubbo/metadata/billing/b2", []byte(`{"app":"billing","revision":"b2","services":{"`+greeter+`:dubbo":{"name":"`+greeter+`","protocol":"dubbo","port":20880}}}`))
	w.set("/services/billing/10.0.1.1:20880", []byte(appInstanceJSON("billing", "10.0.1.1", "b2")))
	rec.WaitFor(t, m, wait, "billing restricted by its new revision's metadata", upsertOf("mapped:dubbo:"+greeter,
		"10.0.0.1:50051/tri v=1.0.0", "10.0.0.2:50051/tri v=1.0.0", "10.0.1.1:20880/dubbo v="))

	// An application instance going away shrinks every interface mapped to it.
	m = rec.Mark()
	w.delete("/services/demo-provider/10.0.0.2:20880")
	rec.WaitFor(t, m, wait, "DemoService shrinks", upsertOf("mapped:dubbo:"+demoIface, "10.0.0.1:20880/dubbo v=", "10.0.0.1:50051/tri v="))

	// Interface-level providers of DemoService take over from the mapping, and hand back.
	m = rec.Mark()
	prov := w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.9", 20880, demoIface, ""))
	rec.WaitFor(t, m, wait, "interface-level DemoService", sdktest.IsUpsert("dubbo:"+demoIface, 1))
	rec.WaitFor(t, m, wait, "mapped DemoService withdrawn", sdktest.IsDelete("mapped:dubbo:"+demoIface))
	m = rec.Mark()
	w.delete(prov)
	rec.WaitFor(t, m, wait, "mapped DemoService back", upsertOf("mapped:dubbo:"+demoIface, "10.0.0.1:20880/dubbo v=", "10.0.0.1:50051/tri v="))

	// A mapping removed deletes its service; the application's own service stays.
	m = rec.Mark()
	w.delete("/dubbo/mapping/" + greeter)
	rec.WaitFor(t, m, wait, "mapped GreeterService deleted", sdktest.IsDelete("mapped:dubbo:"+greeter))
	if _, ok := rec.Service("app:billing"); !ok {
		t.Fatal("app:billing went away with the mapping")
	}

	// Malformed metadata is reported; the revision falls back to all its endpoints.
	m = rec.Mark()
	w.ensure(chroot + "/dubbo/metadata/demo-provider/a2")
	w.set("/dubbo/metadata/demo-provider/a2", []byte(`{"services":{"x":{"name":`))
	w.set("/services/demo-provider/10.0.0.1:20880", []byte(appInstanceJSON("demo-provider", "10.0.0.1", "a2")))
	rec.WaitFor(t, m, wait, "bad metadata rejected", sdktest.IsReject("/dubbo/metadata/demo-provider/a2"))
	rec.WaitFor(t, m, wait, "DemoService on the new revision", func(ev sdktest.Event) bool {
		return ev.Kind == sdktest.Upsert && ev.Key == "mapped:dubbo:"+demoIface && len(ev.Service.Instances) == 2 && ev.Service.Instances[0].Labels["revision"] == "a2"
	})
	if d := p.stats.duplicateWatches.Load(); d != 0 {
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

	p := New().(*Plugin)
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{"mode": "application"}})
	rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	before := p.stats.watches.Load()
	for c := range 20 {
		iface := fmt.Sprintf("com.example.Mapped%d", c%3)
		m := rec.Mark()
		w.ensure(chroot + "/dubbo/mapping/" + iface)
		w.set("/dubbo/mapping/"+iface, []byte("demo-provider"))
		rec.WaitFor(t, m, wait, "mapping added", sdktest.IsUpsert("mapped:dubbo:"+iface, 2))
		m = rec.Mark()
		w.set("/dubbo/mapping/"+iface, []byte("other-app"))
		rec.WaitFor(t, m, wait, "mapping moved away", sdktest.IsDelete("mapped:dubbo:"+iface))
		m = rec.Mark()
		w.delete("/dubbo/mapping/" + iface)
		// Nothing to emit: wait until the plugin has read the mapping directory again.
		deadline := time.Now().Add(5 * time.Second)
		for p.stats.watches.Load() != before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if ev := rec.Events(m); len(ev) != 0 {
			t.Fatalf("deleting an unused mapping emitted:\n%s", rec.Dump(m))
		}
	}
	if after := p.stats.watches.Load(); after != before {
		t.Fatalf("watches grew under mapping churn: %d before, %d after", before, after)
	}
	if d := p.stats.duplicateWatches.Load(); d != 0 {
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
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{"mode": "both"}})
	rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	rec.WaitFor(t, 0, wait, "bad provider rejected", sdktest.IsReject("not-a-url"))
	watches := p.stats.watches.Load()

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
	m := rec.Mark()
	resync(func(*watcher) {})
	if ev := rec.Events(m); len(ev) != 0 {
		t.Fatalf("a resync without drift emitted:\n%s", rec.Dump(m))
	}

	// One endpoint and one whole service missed, one service deleted meanwhile: the state the
	// host has (the recorder's, from the SDK's plan) drifts from the registry.
	svc, _ := rec.Sent("dubbo:" + demoIface)
	svc.Instances = slices.Clone(svc.Instances[:1])
	rec.Set(svc)
	rec.Remove("app:demo-provider")
	rec.Set(catalog.Service{Key: "dubbo:com.example.Gone", Host: "gone", Instances: svc.Instances})
	m = rec.Mark()
	resync(func(*watcher) {})
	rec.WaitFor(t, m, wait, "missing endpoint restored", sdktest.IsUpsert("dubbo:"+demoIface, 2))
	rec.WaitFor(t, m, wait, "missing service restored", sdktest.IsUpsert("app:demo-provider", 2))
	rec.WaitFor(t, m, wait, "stale service deleted", sdktest.IsDelete("dubbo:com.example.Gone"))
	if ev := rec.Events(m); len(ev) != 3 {
		t.Fatalf("the resync sent %d events, want 3:\n%s", len(ev), rec.Dump(m))
	}
	if got := p.stats.repaired.Load(); got != 3 {
		t.Fatalf("repaired = %d, want 3", got)
	}
	if got := p.stats.watches.Load(); got != watches {
		t.Fatalf("watches %d after resyncs, %d before", got, watches)
	}
	if d := p.stats.duplicateWatches.Load(); d != 0 {
		t.Fatalf("%d watches were set twice", d)
	}

	// Changes keep flowing through the watches after a resync.
	m = rec.Mark()
	w.register("dubbo", "com.example.Other", providerURL("dubbo", "10.0.0.4", 20880, "com.example.Other", ""))
	rec.WaitFor(t, m, wait, "change after resync", sdktest.IsUpsert("dubbo:com.example.Other", 2))
}

// TestIntegrationUnreadableNodeKeepsService: a node that becomes unreadable (here an ACL
// that denies the plugin) is reported, and its service keeps what was sent, through a resync
// and through a new session's snapshot; nothing is deleted for want of data.
func TestIntegrationUnreadableNodeKeepsService(t *testing.T) {
	const locked = "com.example.Locked"
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", locked, providerURL("dubbo", "10.0.0.1", 20880, locked, ""))
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.2", 20880, demoIface, ""))
	proxy := testproxy.NewZooKeeper(t, addr)

	p := New().(*Plugin)
	p.inject = make(chan func(*watcher))
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: proxy.Addr() + chroot, Options: map[string]string{"sessionTimeout": "4s"}})
	rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)

	// Only another user may read the providers node from now on; the writer keeps access.
	if err := w.conn.AddAuth("digest", []byte("owner:pw")); err != nil {
		t.Fatal(err)
	}
	providers := chroot + providersPath("dubbo", locked)
	if _, err := w.conn.SetACL(providers, zk.DigestACL(zk.PermAll, "owner", "pw"), -1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = w.conn.SetACL(providers, zk.WorldACL(zk.PermAll), -1) })

	m := rec.Mark()
	p.inject <- func(wt *watcher) { wt.resyncDue = true }
	p.inject <- func(*watcher) {} // the resync is over
	rec.WaitFor(t, m, wait, "the unreadable node reported", func(ev sdktest.Event) bool {
		return ev.Kind == sdktest.Reject && strings.Contains(ev.Key, locked) && strings.Contains(ev.Message, "cannot read")
	})
	for _, ev := range rec.Events(m) {
		if ev.Kind == sdktest.Delete || ev.Kind == sdktest.Upsert {
			t.Fatalf("a resync with an unreadable node changed a service:\n%s", rec.Dump(m))
		}
	}

	// A new session lists everything again: the locked service keeps what the host has.
	m = rec.Mark()
	listings := p.stats.snapshots.Load()
	if err := proxy.ExpireSession(); err != nil {
		t.Fatalf("expiring the session: %v", err)
	}
	rec.WaitFor(t, m, wait, "healthy in the new session", sdktest.IsHealth(true))
	for deadline := time.Now().Add(wait); p.stats.snapshots.Load() == listings; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no listing in the new session within %s", wait)
		}
	}
	if svc, ok := rec.Service("dubbo:" + locked); !ok || len(svc.Instances) != 1 || rec.Count(m, sdktest.Delete) != 0 {
		t.Fatalf("the new session's listing dropped the unreadable service:\n%s", rec.Dump(m))
	}

	// Readable again: the retry reads it, and its watch works.
	m = rec.Mark()
	if _, err := w.conn.SetACL(providers, zk.WorldACL(zk.PermAll), -1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the retry backoff starts at 0.5 s
	w.register("dubbo", locked, providerURL("dubbo", "10.0.0.3", 20880, locked, ""))
	rec.WaitFor(t, m, wait, "the second provider", sdktest.IsUpsert("dubbo:"+locked, 2))
	for _, ev := range rec.Events(m) {
		if ev.Kind == sdktest.Delete {
			t.Fatalf("delete after the node became readable:\n%s", rec.Dump(m))
		}
	}
}
