package supervisor

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

func newTestReceiver(t *testing.T, sink *recordSink) *receiver {
	log, _ := testLogger(t)
	var st Status
	return newReceiver("reg", sink, log, (*Metrics)(nil).forRegistry("reg"), protocol.NewRedactor(map[string]string{"pw": "secret-pw"}),
		func(f func(*Status)) { f(&st); sink.Status("reg", st) })
}

func encode(t *testing.T, evs ...*registryv1.Event) []byte {
	t.Helper()
	data, err := proto.Marshal(&registryv1.WatchResponse{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// feed hands events to the receiver as they arrive from a plugin: encoded (here by the
// generated code) and decoded by the host's codec.
func feed(t *testing.T, r *receiver, evs ...*registryv1.Event) {
	t.Helper()
	var batch protocol.Batch
	if err := batch.Decode(encode(t, evs...)); err != nil {
		t.Fatal(err)
	}
	for i := range batch.Events {
		r.handle(&batch.Events[i])
	}
}

func begin() *registryv1.Event {
	return &registryv1.Event{Kind: &registryv1.Event_SnapshotBegin{SnapshotBegin: &registryv1.SnapshotBegin{}}}
}

func end() *registryv1.Event {
	return &registryv1.Event{Kind: &registryv1.Event_SnapshotEnd{SnapshotEnd: &registryv1.SnapshotEnd{}}}
}

func upsert(key, host string, addrs ...string) *registryv1.Event {
	s := &registryv1.Service{Key: key, Host: host}
	for _, a := range addrs {
		s.Instances = append(s.Instances, &registryv1.Instance{Address: a, Port: 20880, Protocol: "dubbo"})
	}
	return &registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: s}}
}

func del(key string) *registryv1.Event {
	return &registryv1.Event{Kind: &registryv1.Event_Delete{Delete: &registryv1.ServiceDelete{Key: key}}}
}

func rejected(item, reason, key string) *registryv1.Event {
	return &registryv1.Event{Kind: &registryv1.Event_Rejected{Rejected: &registryv1.Rejection{Item: item, Reason: reason, Key: key}}}
}

func state(sink *recordSink) string {
	var out []string
	for key, s := range sink.services("reg") {
		var addrs []string
		for _, in := range s.Instances {
			addrs = append(addrs, in.Address)
		}
		out = append(out, key+"="+strings.Join(addrs, ","))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestReceiverSnapshotsAndDeltas(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []*registryv1.Event
		want   string
	}{
		{"snapshot", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1"), upsert("b", "b.x", "10.0.0.2"), end()}, "a=10.0.0.1 b=10.0.0.2"},
		{"nothing before the snapshot ends", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1")}, ""},
		{"deltas after the snapshot", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1"), end(), upsert("b", "b.x", "10.0.0.2"), del("a")}, "b=10.0.0.2"},
		{"a new snapshot replaces", []*registryv1.Event{
			begin(), upsert("a", "a.x", "10.0.0.1"), upsert("b", "b.x", "10.0.0.2"), end(),
			begin(), upsert("b", "b.x", "10.0.0.3"), end(),
		}, "b=10.0.0.3"},
		{"an unusable service in a snapshot keeps its last state", []*registryv1.Event{
			begin(), upsert("a", "a.x", "10.0.0.1"), end(),
			begin(), upsert("a", "Bad_Host", "10.0.0.9"), end(),
		}, "a=10.0.0.1"},
		{"a service the plugin could not send keeps its last state", []*registryv1.Event{
			begin(), upsert("a", "a.x", "10.0.0.1"), end(),
			begin(), rejected("a", "too large", "a"), end(),
		}, "a=10.0.0.1"},
		{"an unusable upsert changes nothing", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1"), end(), upsert("a", "", "10.0.0.2")}, "a=10.0.0.1"},
		{"a delete inside a snapshot", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1"), upsert("b", "b.x", "10.0.0.2"), del("a"), end()}, "b=10.0.0.2"},
		{"bad instances go, good ones stay", []*registryv1.Event{begin(), upsert("a", "a.x", "10.0.0.1", "nope", "0.0.0.0"), end()}, "a=10.0.0.1"},
		{"an end without a begin is ignored", []*registryv1.Event{end(), upsert("a", "a.x", "10.0.0.1")}, "a=10.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newRecordSink()
			r := newTestReceiver(t, sink)
			for _, ev := range tc.events {
				feed(t, r, ev)
			}
			if got := state(sink); got != tc.want {
				t.Errorf("state %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReceiverReportsEachRejectionOncePerSnapshot(t *testing.T) {
	sink := newRecordSink()
	r := newTestReceiver(t, sink)
	feed(t, r, begin())
	feed(t, r, upsert("a", "a.x", "10.0.0.1", "bad-addr"))
	feed(t, r, end())
	for range 5 {
		feed(t, r, upsert("a", "a.x", "10.0.0.2", "bad-addr")) // churn re-sends the bad instance
	}
	feed(t, r, rejected("node-secret-pw", "token secret-pw refused", ""))
	_, rej, _ := sink.snapshot()
	if len(rej) != 2 {
		t.Fatalf("rejections %v, want 2", rej)
	}
	if rej[0].Item != "a/bad-addr:20880" || !strings.Contains(rej[0].Reason, "not an IP address") {
		t.Errorf("rejection %+v", rej[0])
	}
	if rej[1].Item != "node-[redacted]" || rej[1].Reason != "token [redacted] refused" {
		t.Errorf("plugin rejection not redacted: %+v", rej[1])
	}
	// After a new snapshot, what is still wrong is reported again.
	feed(t, r, begin())
	feed(t, r, upsert("a", "a.x", "bad-addr"))
	feed(t, r, end())
	if _, rej, _ = sink.snapshot(); len(rej) != 3 {
		t.Errorf("%d rejections after a new snapshot, want 3", len(rej))
	}
}

func TestReceiverRejectsInvalidLabelsOneByOne(t *testing.T) {
	sink := newRecordSink()
	r := newTestReceiver(t, sink)
	svc := &registryv1.Service{Key: "a", Host: "a.x", Labels: map[string]string{"ok": "1", "bad key!": "v"}, Instances: []*registryv1.Instance{{
		Address: "10.0.0.1", Port: 1,
		Labels: map[string]string{"version": "1.0", "long": strings.Repeat("v", 64), "space": "a b", "example.com/fine": "yes"},
	}}}
	feed(t, r, &registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: svc}})
	got := sink.services("reg")["a"]
	if fmt.Sprint(got.Labels) != "map[ok:1]" || fmt.Sprint(got.Instances[0].Labels) != "map[example.com/fine:yes version:1.0]" {
		t.Errorf("labels kept: %v %v", got.Labels, got.Instances[0].Labels)
	}
	_, rej, _ := sink.snapshot()
	var items []string
	for _, r := range rej {
		items = append(items, r.Item)
		if !strings.HasSuffix(r.Reason, "; label dropped") {
			t.Errorf("reason %q", r.Reason)
		}
	}
	want := []string{"a label bad key!", "a/10.0.0.1:1 label long", "a/10.0.0.1:1 label space"}
	if !slices.Equal(items, want) {
		t.Errorf("rejected %v, want %v", items, want)
	}
	if !strings.Contains(rej[1].Reason, "value of 64 bytes: must be no more than 63 bytes") {
		t.Errorf("oversized label reason %q", rej[1].Reason)
	}
}

// A service the host cannot read keeps its last state, like one the plugin could not send.
func TestReceiverKeepsServiceOfMalformedEvent(t *testing.T) {
	sink := newRecordSink()
	r := newTestReceiver(t, sink)
	feed(t, r, begin(), upsert("a", "a.x", "10.0.0.1"), end())
	data := encode(t, begin(), upsert("a", "a.x", "10.0.0.9"), upsert("b", "b.x", "10.0.0.2"), end())
	// Not valid UTF-8, which the generated code would refuse for the whole message.
	data = bytes.Replace(data, []byte("10.0.0.9"), []byte("10.0.0.\xff"), 1)
	var batch protocol.Batch
	if err := batch.Decode(data); err != nil {
		t.Fatal(err)
	}
	for i := range batch.Events {
		r.handle(&batch.Events[i])
	}
	if got := state(sink); got != "a=10.0.0.1 b=10.0.0.2" {
		t.Errorf("state %q", got)
	}
	_, rej, _ := sink.snapshot()
	if len(rej) != 1 || rej[0].Item != "a" || !strings.Contains(rej[0].Reason, "malformed event") || !strings.Contains(rej[0].Reason, "UTF-8") {
		t.Errorf("rejections %+v", rej)
	}
}

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("meltemi-registry-zookeeper", 0o755)
	write("meltemi-registry-etcd-v3", 0o755)
	write("meltemi-registry-notexec", 0o644)
	write("meltemi-registry-Bad_Kind", 0o755)
	write("meltemi-registry-", 0o755)
	write("other-binary", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "meltemi-registry-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "meltemi-registry-zookeeper"), filepath.Join(dir, "meltemi-registry-linked")); err != nil {
		t.Fatal(err)
	}
	found, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(found); !slices.Equal(got, []string{"etcd-v3", "linked", "zookeeper"}) {
		t.Errorf("found %v", got)
	}
	if found["zookeeper"] != BinaryPath(dir, "zookeeper") {
		t.Errorf("path %q", found["zookeeper"])
	}
	if _, err := Discover(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing directory: no error")
	}
}

// TestPluginDirList: several plugin directories are searched in order, as PATH is; the first
// holding a kind serves it, so an added directory cannot replace a built-in plugin.
func TestPluginDirList(t *testing.T) {
	builtin, added := t.TempDir(), t.TempDir()
	for _, f := range []struct{ dir, kind string }{{builtin, "zookeeper"}, {added, "zookeeper"}, {added, "eureka"}} {
		if err := os.WriteFile(BinaryPath(f.dir, f.kind), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dirs := builtin + string(os.PathListSeparator) + added
	found, err := Discover(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"zookeeper": BinaryPath(builtin, "zookeeper"), "eureka": BinaryPath(added, "eureka")}; !maps.Equal(found, want) {
		t.Errorf("Discover(%q) = %v, want %v", dirs, found, want)
	}
	for kind, want := range found {
		if got, err := FindPlugin(dirs, kind); err != nil || got != want {
			t.Errorf("FindPlugin(%s) = %q, %v; want %q", kind, got, err, want)
		}
	}
	_, err = FindPlugin(dirs, "consul")
	if err == nil || !strings.Contains(err.Error(), `no plugin for registry kind "consul"`) || !strings.Contains(err.Error(), added) {
		t.Errorf("missing kind: %v", err)
	}
	if _, err := FindPlugin(dirs, "../zookeeper"); err == nil {
		t.Errorf("a kind naming a path was looked up")
	}
}

func TestFileChecksum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := FileChecksum(p)
	if err != nil || sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("checksum %q %v", sum, err)
	}
}

func TestUnusableKindsNeverLeaveThePluginDirectory(t *testing.T) {
	for _, kind := range []string{"../zookeeper", "a/b", "", "UPPER"} {
		if checkKind(kind) == nil {
			t.Errorf("kind %q accepted", kind)
		}
	}
	if checkKind("zookeeper") != nil {
		t.Errorf("zookeeper refused")
	}
}
