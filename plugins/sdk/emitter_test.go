package sdk

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// fakeStream is the server side of a Watch stream, in process: it records what is sent.
type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	mu      sync.Mutex
	batches []*registryv1.WatchResponse
	// block, when set, holds every Send until closed; entered is signalled before.
	block   chan struct{}
	entered chan struct{}
}

func (f *fakeStream) Context() context.Context { return f.ctx }

// SendMsg takes what the SDK sends: pre-encoded batches, which the generated code must be
// able to read (as a host of another version would).
func (f *fakeStream) SendMsg(m any) error {
	b, ok := m.(*protocol.WireBatch)
	if !ok {
		return fmt.Errorf("sent a %T", m)
	}
	return f.send(b)
}

// Send is the generated method, which the SDK does not use: it sends pre-encoded batches.
func (f *fakeStream) Send(*registryv1.WatchResponse) error {
	return fmt.Errorf("the SDK sent a generated message")
}

func (f *fakeStream) send(b *protocol.WireBatch) error {
	if f.block != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
		<-f.block
	}
	r := &registryv1.WatchResponse{}
	if err := proto.Unmarshal(b.Bytes(), r); err != nil {
		return err
	}
	if len(r.GetEvents()) != b.Events() {
		return fmt.Errorf("batch counts %d events, holds %d", b.Events(), len(r.GetEvents()))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, r)
	return nil
}

func (f *fakeStream) events() []*registryv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*registryv1.Event
	for _, b := range f.batches {
		out = append(out, b.GetEvents()...)
	}
	return out
}

// describe renders events compactly: "begin", "upsert:key", "delete:key", "end", ...
func describe(evs []*registryv1.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		switch k := ev.GetKind().(type) {
		case *registryv1.Event_SnapshotBegin:
			out[i] = "begin"
		case *registryv1.Event_SnapshotEnd:
			out[i] = "end"
		case *registryv1.Event_Upsert:
			out[i] = "upsert:" + k.Upsert.GetKey()
		case *registryv1.Event_Delete:
			out[i] = "delete:" + k.Delete.GetKey()
		case *registryv1.Event_Health:
			out[i] = fmt.Sprintf("health:%v:%s", k.Health.GetConnected(), k.Health.GetMessage())
		case *registryv1.Event_Rejected:
			out[i] = fmt.Sprintf("reject:%s:%s:%s", k.Rejected.GetItem(), k.Rejected.GetReason(), k.Rejected.GetKey())
		}
	}
	return out
}

// funcPlugin is a Plugin whose Watch is a function.
type funcPlugin struct {
	watch func(ctx context.Context, e Emitter) error
	cfg   Config
}

func (p *funcPlugin) Describe() Description {
	return Description{Kind: "func", Version: "1", Options: []Option{{Name: "token", Secret: true}}}
}
func (p *funcPlugin) Configure(_ context.Context, cfg Config) error {
	p.cfg = cfg
	if cfg.Options["fail"] != "" {
		return FieldErrors{{"fail", "rejected value " + cfg.Options["fail"] + " with token " + cfg.Secrets["token"]}}
	}
	return nil
}
func (p *funcPlugin) Watch(ctx context.Context, e Emitter) error { return p.watch(ctx, e) }

// watchWith runs watch through the server in process and returns the stream and the
// Watch call's error.
func watchWith(t *testing.T, secrets map[string]string, watch func(ctx context.Context, e Emitter) error) (*fakeStream, error) {
	t.Helper()
	srv := NewServer(&funcPlugin{watch: watch})
	if resp, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{Registry: "r", Secrets: secrets}); err != nil || len(resp.GetErrors()) > 0 {
		t.Fatalf("configure: %v %v", resp, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &fakeStream{ctx: ctx}
	err := srv.Watch(&registryv1.WatchRequest{}, st)
	if status.Code(err) == codes.Unavailable && strings.HasSuffix(err.Error(), "watch ended") {
		// The test's Watch returned while the host still listened: everything was sent.
		err = nil
	}
	return st, err
}

func svc(key string, instances int) catalog.Service {
	s := catalog.Service{Key: key, Host: key + ".example"}
	for i := range instances {
		s.Instances = append(s.Instances, catalog.Instance{Address: fmt.Sprintf("10.0.%d.%d", i>>8&255, i&255), Port: 20880, Protocol: "dubbo"})
	}
	return s
}

func TestEmitterKeepsOrderAcrossBatches(t *testing.T) {
	const n = 3000 // several batches
	st, err := watchWith(t, nil, func(ctx context.Context, e Emitter) error {
		e.Health(true, "up")
		e.Snapshot([]catalog.Service{svc("a", 1), svc("b", 1)})
		for i := range n {
			if i%3 == 2 {
				e.Remove(fmt.Sprint(i - 1))
			} else {
				e.Set(svc(fmt.Sprint(i), 1))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	got := describe(st.events())
	want := []string{"health:true:up", "begin", "upsert:a", "upsert:b", "end"}
	for i := range n {
		if i%3 == 2 {
			want = append(want, fmt.Sprintf("delete:%d", i-1))
		} else {
			want = append(want, fmt.Sprintf("upsert:%d", i))
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events out of order or lost: %d events, want %d", len(got), len(want))
	}
	for _, b := range st.batches {
		if len(b.GetEvents()) > maxBatchEvents {
			t.Errorf("batch of %d events, more than %d", len(b.GetEvents()), maxBatchEvents)
		}
	}
}

// startedEmitter is an emitter as after its first snapshot, so each Set sends an event.
func startedEmitter(ctx context.Context, srv *server) *emitter {
	e := newEmitter(ctx, srv, false)
	e.plan.started = true
	return e
}

func TestEmitterBatchesBusyAndSendsQuietEventsAtOnce(t *testing.T) {
	// While the stream is blocked, events pile up and leave in full batches.
	srv := NewServer(&funcPlugin{}).(*server)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startedEmitter(ctx, srv)
	st := &fakeStream{ctx: ctx, block: make(chan struct{}), entered: make(chan struct{}, 1)}
	sent := make(chan error, 1)
	go func() { sent <- e.run(st.send) }()
	e.Set(svc("first", 1))
	<-st.entered // run took it alone and is blocked sending it
	for i := range 2 * maxBatchEvents {
		e.Set(svc(fmt.Sprint(i), 1))
	}
	close(st.block)
	e.stop()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, b := range st.batches {
		sizes = append(sizes, len(b.GetEvents()))
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{1, maxBatchEvents, maxBatchEvents}) {
		t.Errorf("batch sizes %v, want [1 %d %d]", sizes, maxBatchEvents, maxBatchEvents)
	}

	// A quiet plugin's single event is sent without waiting for company.
	e2 := startedEmitter(ctx, srv)
	st2 := &fakeStream{ctx: ctx}
	go func() { _ = e2.run(st2.send) }()
	e2.Set(svc("lonely", 1))
	deadline := time.Now().Add(5 * time.Second)
	for len(st2.events()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a single event was not sent")
		}
		time.Sleep(time.Millisecond)
	}
	e2.stop()
}

func TestEmitterBoundsBatchBytes(t *testing.T) {
	big := svc("big", 4000) // about 100 KB encoded
	st, err := watchWith(t, nil, func(ctx context.Context, e Emitter) error {
		e.Snapshot(nil)
		for i := range 40 {
			big.Key = fmt.Sprint(i)
			e.Set(big)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range st.batches {
		total += len(b.GetEvents())
		if size := proto.Size(b); size > maxBatchBytes+proto.Size(&registryv1.WatchResponse{Events: b.GetEvents()[:1]}) {
			t.Errorf("batch of %d bytes", size)
		}
	}
	if total != 2+40 || len(st.batches) < 4 { // snapshot begin and end, 40 upserts
		t.Errorf("%d events in %d batches", total, len(st.batches))
	}
}

func TestEmitterRejectsOversizedServiceKeepingIt(t *testing.T) {
	huge := catalog.Service{Key: "huge", Host: "huge.example", Instances: []catalog.Instance{{Address: "10.0.0.1", Port: 1, Labels: map[string]string{"x": strings.Repeat("y", maxServiceBytes)}}}}
	st, err := watchWith(t, nil, func(ctx context.Context, e Emitter) error {
		e.Snapshot([]catalog.Service{svc("ok", 1), huge})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := describe(st.events())
	// Snapshots are sent in key order.
	if len(got) != 4 || got[0] != "begin" || !strings.HasPrefix(got[1], "reject:huge:service with 1 instances cannot be sent: ") || !strings.HasSuffix(got[1], ":huge") || got[2] != "upsert:ok" || got[3] != "end" {
		t.Errorf("events %q", got)
	}
}

func TestEmitterRejectsServiceWithInvalidText(t *testing.T) {
	bad := svc("bad\xff", 1)
	bad.Instances[0].Labels = map[string]string{"v": "\xfe"}
	st, err := watchWith(t, nil, func(ctx context.Context, e Emitter) error {
		e.Snapshot([]catalog.Service{bad, svc("ok", 1)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "begin,reject:bad\uFFFD:service with 1 instances cannot be sent: text that is not valid UTF-8:bad\uFFFD,upsert:ok,end"
	if got := strings.Join(describe(st.events()), ","); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestSecretsAreRedactedBeforeTheWire(t *testing.T) {
	const token = "s3cr3t-token"
	secrets := map[string]string{"token": token}
	st, err := watchWith(t, secrets, func(ctx context.Context, e Emitter) error {
		e.Health(false, "auth failed with "+token)
		e.Reject("node?token="+token, `bad token "`+token+`"`)
		return fmt.Errorf("connecting with token %s: denied", token)
	})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "connecting with token [redacted]: denied") {
		t.Errorf("watch error %v", err)
	}
	got := strings.Join(describe(st.events()), "\n")
	if strings.Contains(got, token) {
		t.Errorf("secret on the wire:\n%s", got)
	}
	if want := "health:false:auth failed with [redacted]\nreject:node?token=[redacted]:bad token \"[redacted]\":"; got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}

	// Configure's field errors are redacted too.
	srv := NewServer(&funcPlugin{})
	resp, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{Options: map[string]string{"fail": "x"}, Secrets: secrets})
	if err != nil || len(resp.GetErrors()) != 1 || resp.GetErrors()[0].GetMessage() != "rejected value x with token [redacted]" {
		t.Errorf("configure: %v %v", resp, err)
	}
}

func TestWatchLifecycle(t *testing.T) {
	srv := NewServer(&funcPlugin{watch: func(ctx context.Context, e Emitter) error { panic("plugin bug") }})
	st := &fakeStream{ctx: context.Background()}
	if err := srv.Watch(&registryv1.WatchRequest{}, st); err == nil || !strings.Contains(err.Error(), "before a successful configure") {
		t.Errorf("watch before configure: %v", err)
	}
	if _, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Watch(&registryv1.WatchRequest{}, st); err == nil || !strings.Contains(err.Error(), "panic: plugin bug") {
		t.Errorf("panicking watch: %v", err)
	}

	// A Watch that returns nil while the host still listens has ended unexpectedly.
	srv = NewServer(&funcPlugin{watch: func(ctx context.Context, e Emitter) error { return nil }})
	if _, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Watch(&registryv1.WatchRequest{}, st); err == nil || !strings.Contains(err.Error(), "watch ended") {
		t.Errorf("watch returning nil: %v", err)
	}
}

func TestHealthReflectsTheLastReport(t *testing.T) {
	reported := make(chan struct{})
	srv := NewServer(&funcPlugin{watch: func(ctx context.Context, e Emitter) error {
		e.Health(true, "connected")
		close(reported)
		<-ctx.Done()
		return ctx.Err()
	}})
	h, err := srv.Health(context.Background(), &registryv1.HealthRequest{})
	if err != nil || h.GetConnected() {
		t.Errorf("health before watch: %v %v", h, err)
	}
	if _, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Watch(&registryv1.WatchRequest{}, &fakeStream{ctx: ctx}) }()
	<-reported
	if h, _ := srv.Health(context.Background(), &registryv1.HealthRequest{}); !h.GetConnected() || h.GetMessage() != "connected" {
		t.Errorf("health during watch: %v", h)
	}
	// A second watch while one runs is refused.
	if err := srv.Watch(&registryv1.WatchRequest{}, &fakeStream{ctx: ctx}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second watch: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("cancelled watch: %v", err)
	}
}

func TestHostGone(t *testing.T) {
	for _, tc := range []struct {
		start, now int
		env        string
		want       bool
	}{
		{100, 100, "", false},
		{100, 100, "100", false},
		{100, 1, "", true},       // re-parented: the host died
		{1, 1, "100", true},      // the host died before the plugin looked
		{100, 100, "abc", false}, // garbage in the environment is ignored
	} {
		if got := hostGone(tc.start, tc.now, tc.env); got != tc.want {
			t.Errorf("hostGone(%d, %d, %q) = %v, want %v", tc.start, tc.now, tc.env, got, tc.want)
		}
	}
}

func TestServedVersionDefaultsToProtocolVersion(t *testing.T) {
	if protocol.ServedVersion() != protocol.Version {
		t.Errorf("served version %d, protocol version %d", protocol.ServedVersion(), protocol.Version)
	}
}

// TestHealthRepeatsAreNotSent: a plugin may report health on every attempt; only changes
// reach the host, and what reaches it has the credentials removed, as sdk.Redact removes them.
func TestHealthRepeatsAreNotSent(t *testing.T) {
	reported := make(chan struct{})
	srv := NewServer(&funcPlugin{watch: func(ctx context.Context, e Emitter) error {
		for _, h := range []struct {
			ok  bool
			msg string
		}{{false, "dialing"}, {false, "dialing"}, {false, "auth s3cret-pw refused"}, {true, ""}, {true, ""}, {false, "dialing"}} {
			e.Health(h.ok, h.msg)
		}
		close(reported)
		<-ctx.Done()
		return ctx.Err()
	}})
	if _, err := srv.Configure(context.Background(), &registryv1.ConfigureRequest{Secrets: map[string]string{"password": "s3cret-pw"}}); err != nil {
		t.Fatal(err)
	}
	if got := Redact("error: s3cret-pw"); got != "error: [redacted]" {
		t.Errorf("Redact = %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream := &fakeStream{ctx: ctx}
	done := make(chan error, 1)
	go func() { done <- srv.Watch(&registryv1.WatchRequest{}, stream) }()
	<-reported
	want := []string{"health:false:dialing", "health:false:auth [redacted] refused", "health:true:", "health:false:dialing"}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(describe(stream.events()), want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := describe(stream.events()); !slices.Equal(got, want) {
		t.Errorf("sent %v, want %v", got, want)
	}
	cancel()
	<-done
}
