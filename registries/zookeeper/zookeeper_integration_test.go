package zookeeper

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/registries/dubbo/dubbotest"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/internal/testproxy"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// These tests run the plugin in process against a real ZooKeeper (MELTEMI_ZK_ADDR). Each test
// works below its own chroot, so tests never see each other's nodes.

const (
	demoIface = "org.apache.dubbo.demo.DemoService"
	wait      = 20 * time.Second
)

func TestIntegrationInterfaceLifecycle(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	const other = "com.example.Outer$Inner"
	w.register("dubbo", demoIface, providerURL("dubbo", "192.168.1.10", 20880, demoIface, "version=1.0.0&group=g1&weight=50"))
	w.register("dubbo", other, providerURL("tri", "2001:db8::5", 50051, other, "version=2.0.0"))
	// Dubbo's other categories and the metadata/mapping nodes are not providers.
	w.ensure(chroot + "/dubbo/" + dubbotest.EncodeURL(demoIface) + "/consumers")
	w.createEphemeral("/dubbo/"+dubbotest.EncodeURL(demoIface)+"/consumers", dubbotest.EncodeURL("consumer://10.0.0.3/"+demoIface+"?category=consumers&side=consumer"), nil)
	w.createEphemeral("/dubbo/"+dubbotest.EncodeURL(demoIface)+"/configurators", dubbotest.EncodeURL("override://0.0.0.0/"+demoIface+"?category=configurators&weight=1"), nil)
	w.ensure(chroot + "/dubbo/metadata/" + demoIface)
	w.ensure(chroot + "/dubbo/config/dubbo")
	// An interface with no providers node yet.
	w.ensure(chroot + "/dubbo/com.example.Later")

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot})
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	snap := found.Services
	if len(snap) != 2 || snap[0].Key != "dubbo:"+other || snap[1].Key != "dubbo:"+demoIface {
		t.Fatalf("snapshot:\n%s", rec.Dump(0))
	}
	checkValid(t, snap...)
	demo := snap[1]
	if demo.Host != "org.apache.dubbo.demo.demoservice" || len(demo.Instances) != 1 {
		t.Fatalf("demo service = %+v", demo)
	}
	in := demo.Instances[0]
	wantLabels := map[string]string{"application": "demo-provider", "version": "1.0.0", "group": "g1"}
	if in.Address != "192.168.1.10" || in.Port != 20880 || in.Protocol != "dubbo" || in.Weight != 50 || !maps.Equal(in.Labels, wantLabels) {
		t.Fatalf("demo instance = %+v", in)
	}
	if got := snap[0]; got.Host != "com.example.outer-inner" || got.Instances[0].Address != "2001:db8::5" || got.Instances[0].Protocol != "tri" {
		t.Fatalf("inner-class service = %+v", got)
	}
	rec.WaitFor(t, 0, wait, "healthy", sdktest.IsHealth(true))

	// A second provider, in another group: one upsert with both.
	m := rec.Mark()
	second := w.register("dubbo", demoIface, providerURL("dubbo", "192.168.1.11", 20880, demoIface, "version=1.0.0&group=g2"))
	found = rec.WaitFor(t, m, wait, "upsert with 2 instances", sdktest.IsUpsert("dubbo:"+demoIface, 2))
	checkValid(t, found.Service)

	// The provider node of a later interface appears.
	m = rec.Mark()
	w.register("dubbo", "com.example.Later", providerURL("dubbo", "10.0.0.8", 20880, "com.example.Later", ""))
	rec.WaitFor(t, m, wait, "upsert of the later interface", sdktest.IsUpsert("dubbo:com.example.Later", 1))

	// Removing one provider: an upsert with one left.
	m = rec.Mark()
	w.delete(second)
	found = rec.WaitFor(t, m, wait, "upsert with 1 instance", sdktest.IsUpsert("dubbo:"+demoIface, 1))
	if got := found.Service.Instances[0].Labels["group"]; got != "g1" {
		t.Fatalf("remaining instance has group %q, want g1", got)
	}

	// Removing the last provider deletes the service; its neighbours are untouched.
	m = rec.Mark()
	for _, prov := range providerNodes(t, w, chroot, "dubbo", demoIface) {
		w.delete(prov)
	}
	rec.WaitFor(t, m, wait, "delete", sdktest.IsDelete("dubbo:"+demoIface))
	if _, ok := rec.Service("dubbo:" + other); !ok {
		t.Fatal("neighbour service disappeared")
	}

	// The whole interface node removed as well: nothing more to say, the service is gone.
	// Re-registering brings it back.
	w.deleteTree(chroot + "/dubbo/" + dubbotest.EncodeURL(demoIface))
	m = rec.Mark()
	w.register("dubbo", demoIface, providerURL("dubbo", "192.168.1.12", 20880, demoIface, ""))
	rec.WaitFor(t, m, wait, "re-registered interface", sdktest.IsUpsert("dubbo:"+demoIface, 1))

	for _, ev := range rec.Events(0) {
		if ev.Kind == sdktest.Reject {
			t.Errorf("unexpected rejection %s: %s", ev.Key, ev.Message)
		}
	}
}

// providerNodes lists an interface's provider node paths (below the chroot).
func providerNodes(t *testing.T, w *dubboWriter, chroot, root, iface string) []string {
	t.Helper()
	children, _, err := w.conn.Children(chroot + providersPath(root, iface))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(children))
	for i, c := range children {
		out[i] = providersPath(root, iface) + "/" + c
	}
	return out
}

func TestIntegrationRejectsMalformedProviders(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	pp := providersPath("dubbo", demoIface)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	bad := map[string]string{
		"garbage":    "this-is-not-a-url",
		"badport":    dubbotest.EncodeURL(providerURL("dubbo", "10.0.0.2", 99999, demoIface, "")),
		"hostname":   dubbotest.EncodeURL("dubbo://provider.local:20880/" + demoIface + "?interface=" + demoIface),
		"noiface":    dubbotest.EncodeURL("dubbo://10.0.0.3:20880?application=x"),
		"otheriface": dubbotest.EncodeURL(providerURL("dubbo", "10.0.0.4", 20880, "com.example.Other", "")),
		"huge":       dubbotest.EncodeURL(providerURL("dubbo", "10.0.0.5", 20880, demoIface, "x="+strings.Repeat("y", dubbo.MaxItemBytes))),
		"badescape":  "dubbo%3A%2F%2F10.0.0.6%3A20880%2Fa%ZZ",
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		w.createEphemeral(pp, bad[name], nil)
	}
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.9", 20880, demoIface, ""))
	// A consumer URL among providers is ignored, not rejected.
	w.createEphemeral(pp, dubbotest.EncodeURL("dubbo://10.0.0.7:20880/"+demoIface+"?side=consumer"), nil)
	// An interface whose node name does not decode.
	w.ensure(chroot + "/dubbo/com.example.%ZZ/providers")
	w.register("dubbo", "com.example.Fine", providerURL("dubbo", "10.0.0.10", 20880, "com.example.Fine", ""))

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot})
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	snap := found.Services
	if len(snap) != 2 {
		t.Fatalf("snapshot:\n%s", rec.Dump(0))
	}
	checkValid(t, snap...)
	if s := snap[1]; s.Key != "dubbo:"+demoIface || len(s.Instances) != 2 || s.Instances[0].Address != "10.0.0.1" || s.Instances[1].Address != "10.0.0.9" {
		t.Fatalf("good providers not emitted:\n%s", rec.Dump(0))
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		rec.WaitFor(t, 0, wait, "rejection of "+name, sdktest.IsReject(chroot+pp+"/"+bad[name][:min(40, len(bad[name]))]))
	}
	rec.WaitFor(t, 0, wait, "rejection of the bad interface name", sdktest.IsReject("com.example.%ZZ"))
	rejects := 0
	for _, ev := range rec.Events(0) {
		if ev.Kind == sdktest.Reject {
			rejects++
			if len(ev.Key) > 260 {
				t.Errorf("rejected item not truncated: %d bytes", len(ev.Key))
			}
		}
	}
	if rejects != len(bad)+1 {
		t.Fatalf("%d rejections, want %d:\n%s", rejects, len(bad)+1, rec.Dump(0))
	}

	// A malformed node added later is rejected once; a good one still comes through.
	m := rec.Mark()
	w.createEphemeral(pp, dubbotest.EncodeURL("dubbo://10.0.0.11:0/"+demoIface), nil)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.12", 20880, demoIface, ""))
	rec.WaitFor(t, m, wait, "upsert with 3 instances", sdktest.IsUpsert("dubbo:"+demoIface, 3))
	rec.WaitFor(t, m, wait, "rejection of the port-0 provider", sdktest.IsReject("10.0.0.11"))
	for _, ev := range rec.Events(m) {
		if ev.Kind == sdktest.Reject && !strings.Contains(ev.Key, "10.0.0.11") {
			t.Errorf("known bad item rejected again: %s", ev.Key)
		}
	}
}

func TestIntegrationApplicationLevel(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "192.168.1.10", 20880, demoIface, ""))
	w.ensure(chroot + "/dubbo/mapping/" + demoIface)
	w.set("/dubbo/mapping/"+demoIface, []byte("demo-provider"))
	first := w.registerApp("demo-provider", "192.168.1.10", 20880, dubbo3Instance)

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{"mode": "both"}})
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	snap := found.Services
	if len(snap) != 2 || snap[0].Key != "app:demo-provider" || snap[1].Key != "dubbo:"+demoIface {
		t.Fatalf("snapshot:\n%s", rec.Dump(0))
	}
	checkValid(t, snap...)
	app := snap[0]
	if app.Host != "demo-provider.dubbo" || len(app.Instances) != 2 {
		t.Fatalf("app service = %+v", app)
	}
	wantLabels := map[string]string{"application": "demo-provider", "revision": "a1b2c3d4e5f6"}
	if a, b := app.Instances[0], app.Instances[1]; a.Protocol != "dubbo" || a.Port != 20880 || b.Protocol != "tri" || b.Port != 50051 || !maps.Equal(a.Labels, wantLabels) {
		t.Fatalf("app instances = %+v", app.Instances)
	}

	// A second instance: one upsert with four endpoints.
	m := rec.Mark()
	second := w.registerApp("demo-provider", "192.168.1.11", 20880, strings.ReplaceAll(dubbo3Instance, "192.168.1.10", "192.168.1.11"))
	rec.WaitFor(t, m, wait, "upsert with 4 endpoints", sdktest.IsUpsert("app:demo-provider", 4))

	// A metadata change (new revision) of an instance is seen through its data watch.
	m = rec.Mark()
	w.set(first, []byte(strings.ReplaceAll(dubbo3Instance, "a1b2c3d4e5f6", "ffff0000")))
	rec.WaitFor(t, m, wait, "upsert with the new revision", func(ev sdktest.Event) bool {
		if ev.Kind != sdktest.Upsert || ev.Key != "app:demo-provider" {
			return false
		}
		revs := map[string]int{}
		for _, in := range ev.Service.Instances {
			revs[in.Labels["revision"]]++
		}
		return revs["ffff0000"] == 2 && revs["a1b2c3d4e5f6"] == 2
	})

	// Malformed instance data is rejected; the others stay.
	m = rec.Mark()
	w.registerApp("demo-provider", "192.168.1.12", 20880, `{"address":"192.168.1.12","port":`)
	rec.WaitFor(t, m, wait, "rejection", sdktest.IsReject("192.168.1.12"))
	if s, _ := rec.Service("app:demo-provider"); len(s.Instances) != 4 {
		t.Fatalf("app service has %d endpoints after a bad instance, want 4", len(s.Instances))
	}

	// Another application appears; instances go away; the last one deletes the service.
	m = rec.Mark()
	w.registerApp("Billing_App", "10.1.0.1", 20880, instanceJSON("10.1.0.1", 20880, nil))
	found = rec.WaitFor(t, m, wait, "new application", sdktest.IsUpsert("app:Billing_App", 1))
	if h := found.Service.Host; h != "billing-app.dubbo" {
		t.Fatalf("host = %q, want billing-app.dubbo", h)
	}
	m = rec.Mark()
	w.delete(second)
	rec.WaitFor(t, m, wait, "upsert with 2 endpoints", sdktest.IsUpsert("app:demo-provider", 2))
	m = rec.Mark()
	w.delete(first)
	w.delete("/services/demo-provider/192.168.1.12:20880")
	rec.WaitFor(t, m, wait, "delete of the application", sdktest.IsDelete("app:demo-provider"))
}

func TestIntegrationSessionExpiry(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	w.register("dubbo", "com.example.Kept", providerURL("dubbo", "10.0.0.2", 20880, "com.example.Kept", ""))
	proxy := testproxy.NewZooKeeper(t, addr)

	p := New().(*Plugin)
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: proxy.Addr() + chroot, Options: map[string]string{"sessionTimeout": "4s"}})
	rec.WaitFor(t, 0, wait, "first snapshot", sdktest.IsSnapshot)
	firstSession := proxy.Session()
	watchesBefore := p.stats.watches.Load()

	// Expire the plugin's session, then change the registry while the plugin is between
	// sessions: the new session's listing must bring the change (as the difference from what
	// the host has), and nothing may be deleted.
	m := rec.Mark()
	if err := proxy.ExpireSession(); err != nil {
		t.Fatalf("expiring the session: %v", err)
	}
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.3", 20880, demoIface, ""))
	found := rec.WaitFor(t, m, wait, "the change from the new session's listing", sdktest.IsUpsert("dubbo:"+demoIface, 2))
	if got := p.stats.snapshots.Load(); got != 2 {
		t.Fatalf("%d listings, want 2", got)
	}
	if proxy.Session() == firstSession {
		t.Fatal("the session did not change")
	}
	sawUnhealthy := false
	for _, ev := range rec.Events(m) {
		switch ev.Kind {
		case sdktest.Delete, sdktest.Snapshot:
			t.Fatalf("%s after the session expired:\n%s", ev, rec.Dump(m))
		case sdktest.Health:
			sawUnhealthy = sawUnhealthy || !ev.Connected
		}
	}
	if !sawUnhealthy {
		t.Errorf("no unhealthy report while the session was lost:\n%s", rec.Dump(m))
	}
	rec.WaitFor(t, found.Seq, wait, "healthy again", sdktest.IsHealth(true))
	if _, ok := rec.Service("dubbo:com.example.Kept"); !ok {
		t.Fatalf("the unchanged service is gone:\n%s", rec.Dump(m))
	}
	if got := p.stats.watches.Load(); got != watchesBefore {
		t.Fatalf("%d watches after the new session, want %d as before", got, watchesBefore)
	}

	// The new session's watches work.
	m = rec.Mark()
	w.register("dubbo", "com.example.Kept", providerURL("dubbo", "10.0.0.4", 20880, "com.example.Kept", ""))
	rec.WaitFor(t, m, wait, "upsert after the new session", sdktest.IsUpsert("dubbo:com.example.Kept", 2))
}

func TestIntegrationDisconnectKeepsSession(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	proxy := testproxy.NewZooKeeper(t, addr)

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: proxy.Addr() + chroot, Options: map[string]string{"sessionTimeout": "20s"}})
	rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	session := proxy.Session()

	// A short outage: the plugin reports it, and a change made meanwhile arrives as an
	// ordinary upsert after the reconnect (the client re-sets its watches).
	m := rec.Mark()
	proxy.Block()
	rec.WaitFor(t, m, wait, "unhealthy", sdktest.IsHealth(false))
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.2", 20880, demoIface, ""))
	time.Sleep(500 * time.Millisecond)
	proxy.Unblock()
	rec.WaitFor(t, m, wait, "upsert after reconnect", sdktest.IsUpsert("dubbo:"+demoIface, 2))
	rec.WaitFor(t, m, wait, "healthy", sdktest.IsHealth(true))
	for _, ev := range rec.Events(m) {
		if ev.Kind == sdktest.Snapshot || ev.Kind == sdktest.Delete {
			t.Fatalf("unexpected %s after a reconnect within the session:\n%s", ev.Kind, rec.Dump(m))
		}
	}
	if proxy.Session() != session {
		t.Fatal("the session changed")
	}
}

func TestIntegrationZooKeeperDownAtStart(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	proxy := testproxy.NewZooKeeper(t, addr)
	proxy.Block()

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: proxy.Addr() + chroot})
	rec.WaitFor(t, 0, wait, "unhealthy", sdktest.IsHealth(false))
	time.Sleep(2500 * time.Millisecond) // several connection attempts
	for _, ev := range rec.Events(0) {
		if ev.Kind != sdktest.Health || ev.Connected {
			t.Fatalf("unexpected event while ZooKeeper is unreachable:\n%s", rec.Dump(0))
		}
	}
	proxy.Unblock()
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	if snap := found.Services; len(snap) != 1 {
		t.Fatalf("snapshot:\n%s", rec.Dump(0))
	}
	rec.WaitFor(t, found.Seq, wait, "healthy", sdktest.IsHealth(true))
}

func TestIntegrationWatchesDoNotGrow(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, ""))
	w.register("dubbo", "com.example.Stable", providerURL("dubbo", "10.0.0.2", 20880, "com.example.Stable", ""))
	w.registerApp("demo-provider", "10.0.0.1", 20880, instanceJSON("10.0.0.1", 20880, nil))

	p := New().(*Plugin)
	rec := sdktest.Run(t, p, sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{"mode": "both"}})
	rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	before := p.stats.watches.Load()
	serverBefore, connsBefore, haveServer := zkWatchCount(t, addr)

	// 100 add/remove cycles of a provider, each seen by the plugin.
	for c := range 100 {
		m := rec.Mark()
		prov := w.register("dubbo", demoIface, providerURL("dubbo", "10.0.1.1", 20880+c%10, demoIface, ""))
		rec.WaitFor(t, m, wait, fmt.Sprintf("cycle %d: add", c), sdktest.IsUpsert("dubbo:"+demoIface, 2))
		m = rec.Mark()
		w.delete(prov)
		rec.WaitFor(t, m, wait, fmt.Sprintf("cycle %d: remove", c), sdktest.IsUpsert("dubbo:"+demoIface, 1))
	}
	// Whole interfaces and application instances coming and going.
	for c := range 20 {
		iface := fmt.Sprintf("com.example.Churn%d", c%3)
		m := rec.Mark()
		prov := w.register("dubbo", iface, providerURL("dubbo", "10.0.2.1", 20880, iface, ""))
		rec.WaitFor(t, m, wait, "churn interface", sdktest.IsUpsert("dubbo:"+iface, 1))
		inst := w.registerApp("demo-provider", "10.0.2.1", 20880, instanceJSON("10.0.2.1", 20880, nil))
		rec.WaitFor(t, m, wait, "churn instance", sdktest.IsUpsert("app:demo-provider", 2))
		m = rec.Mark()
		w.delete(prov)
		w.deleteTree(chroot + "/dubbo/" + dubbotest.EncodeURL(iface))
		w.delete(inst)
		rec.WaitFor(t, m, wait, "churn interface gone", sdktest.IsDelete("dubbo:"+iface))
		rec.WaitFor(t, m, wait, "churn instance gone", sdktest.IsUpsert("app:demo-provider", 1))
	}
	// Let the last events settle, then compare.
	deadline := time.Now().Add(5 * time.Second)
	for p.stats.watches.Load() != before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	after := p.stats.watches.Load()
	t.Logf("plugin watches: %d before churn, %d after; %d reads", before, after, p.stats.reads.Load())
	if after != before {
		t.Fatalf("watches grew under churn: %d before, %d after", before, after)
	}
	if d := p.stats.duplicateWatches.Load(); d != 0 {
		t.Fatalf("%d watches were set twice", d)
	}
	// The server agrees, provided nobody else uses it meanwhile: the only connections are the
	// plugin's, the writer's and the probe's own.
	if serverAfter, connsAfter, ok := zkWatchCount(t, addr); haveServer && ok {
		t.Logf("server watches: %d before churn, %d after (%d/%d connections)", serverBefore, serverAfter, connsBefore, connsAfter)
		if connsBefore == 3 && connsAfter == 3 && (serverAfter != serverBefore || int64(serverAfter) != after) {
			t.Fatalf("server watch count %d before churn, %d after; the plugin counts %d", serverBefore, serverAfter, after)
		}
	}
}

func TestIntegrationDigestAuth(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", "com.example.Open", providerURL("dubbo", "10.0.0.1", 20880, "com.example.Open", ""))
	// A protected interface, readable by the digest user only.
	protected := chroot + "/dubbo/com.example.Secret"
	w.ensure(protected)
	acl := zk.DigestACL(zk.PermAll, "meltemi", "s3cret-pw")
	if _, err := w.conn.Create(protected+"/providers", nil, 0, acl); err != nil {
		t.Fatal(err)
	}
	if err := w.conn.AddAuth("digest", []byte("meltemi:s3cret-pw")); err != nil {
		t.Fatal(err)
	}
	w.createEphemeral("/dubbo/com.example.Secret/providers", dubbotest.EncodeURL(providerURL("dubbo", "10.0.0.2", 20880, "com.example.Secret", "")), nil)

	t.Run("with credentials", func(t *testing.T) {
		rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot, Secrets: map[string]string{"username": "meltemi", "password": "s3cret-pw"}})
		found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
		if snap := found.Services; len(snap) != 2 {
			t.Fatalf("snapshot:\n%s", rec.Dump(0))
		}
		for _, ev := range rec.Events(0) {
			if strings.Contains(ev.Message, "s3cret-pw") || strings.Contains(ev.Key, "s3cret-pw") {
				t.Fatalf("password leaked in an event: %+v", ev)
			}
		}
	})
	t.Run("without credentials", func(t *testing.T) {
		rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot})
		found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
		if snap := found.Services; len(snap) != 1 || snap[0].Key != "dubbo:com.example.Open" {
			t.Fatalf("snapshot:\n%s", rec.Dump(0))
		}
		rec.WaitFor(t, 0, wait, "rejection of the protected node", func(ev sdktest.Event) bool {
			return ev.Kind == sdktest.Reject && strings.Contains(ev.Key, "com.example.Secret") && strings.Contains(ev.Message, "not authenticated")
		})
	})
}

func TestIntegrationRootsAndTemplate(t *testing.T) {
	addr := zkAddr(t)
	chroot := testChroot(t)
	w := newWriter(t, addr, chroot)
	w.register("dubbo", demoIface, providerURL("dubbo", "10.0.0.1", 20880, demoIface, "version=1.0.0"))
	w.register("prod/dubbo", demoIface, providerURL("dubbo", "10.0.0.2", 20880, demoIface, "version=1.0.0"))
	w.register("prod/dubbo", "com.example.Mixed", providerURL("dubbo", "10.0.0.3", 20880, "com.example.Mixed", "version=1"))
	w.register("prod/dubbo", "com.example.Mixed", providerURL("dubbo", "10.0.0.4", 20880, "com.example.Mixed", "version=2"))
	w.register("ignored", "com.example.Ignored", providerURL("dubbo", "10.0.0.5", 20880, "com.example.Ignored", ""))

	rec := sdktest.Run(t, New(), sdk.Config{Registry: "test", Address: addr + chroot, Options: map[string]string{
		"roots":        "dubbo,/prod/dubbo/",
		"hostTemplate": "{{.Version}}.{{.Interface}}.{{.Protocol}}",
	}})
	found := rec.WaitFor(t, 0, wait, "snapshot", sdktest.IsSnapshot)
	snap := found.Services
	keys := make([]string, len(snap))
	hosts := map[string]string{}
	for j, s := range snap {
		keys[j] = s.Key
		hosts[s.Key] = s.Host
	}
	// com.example.Mixed has no common version: its host starts with an empty label, so it is
	// rejected.
	want := []string{"dubbo:" + demoIface, "prod/dubbo:" + demoIface}
	if !slices.Equal(keys, want) {
		t.Fatalf("snapshot keys = %v, want %v\n%s", keys, want, rec.Dump(0))
	}
	if h := hosts["dubbo:"+demoIface]; h != "1.0.0.org.apache.dubbo.demo.demoservice.dubbo" {
		t.Fatalf("host = %q", h)
	}
	rec.WaitFor(t, 0, wait, "rejection of the mixed-version host", func(ev sdktest.Event) bool {
		return ev.Kind == sdktest.Reject && ev.Key == "prod/dubbo:com.example.Mixed" && strings.Contains(ev.Message, "empty DNS label")
	})
}
