package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

const wait = 20 * time.Second

// sharedConsul returns the address of the Consul server started by e2e/infra/up.sh.
func sharedConsul(t testing.TB) string {
	t.Helper()
	env := harness.Load(t)
	env.RequireComponent(t, harness.Consul)
	return env.ConsulAddr
}

// ---------------------------------------------------------------------------------------
// An emitter that keeps the resulting state and a log of what happened.

type emitted struct {
	kind string // snapshot, upsert, delete, health, reject
	key  string // service key, or the rejected item
	msg  string
	ok   bool
	n    int // services in a snapshot, instances in an upsert
}

type stateRecorder struct {
	mu      sync.Mutex
	log     []emitted
	state   map[string]sdk.Service
	synced  bool
	healthy bool
	changed chan struct{}
}

func newStateRecorder() *stateRecorder {
	return &stateRecorder{state: map[string]sdk.Service{}, changed: make(chan struct{}, 1)}
}

func (r *stateRecorder) record(ev emitted, apply func()) {
	r.mu.Lock()
	r.log = append(r.log, ev)
	apply()
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *stateRecorder) Snapshot(services []sdk.Service) {
	r.record(emitted{kind: "snapshot", n: len(services)}, func() {
		r.synced = true
		clear(r.state)
		for _, s := range services {
			r.state[s.Key] = s
		}
	})
}

func (r *stateRecorder) Upsert(s sdk.Service) {
	r.record(emitted{kind: "upsert", key: s.Key, n: len(s.Instances)}, func() { r.state[s.Key] = s })
}

func (r *stateRecorder) Delete(key string) {
	r.record(emitted{kind: "delete", key: key}, func() { delete(r.state, key) })
}

func (r *stateRecorder) Health(ok bool, msg string) {
	r.record(emitted{kind: "health", ok: ok, msg: msg}, func() { r.healthy = ok })
}

func (r *stateRecorder) Reject(item, reason string) {
	r.record(emitted{kind: "reject", key: item, msg: reason}, func() {})
}

// mark is a position in the log.
func (r *stateRecorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log)
}

func (r *stateRecorder) since(mark int) []emitted {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log[mark:])
}

func (r *stateRecorder) count(mark int, kind string) int {
	n := 0
	for _, ev := range r.since(mark) {
		if ev.kind == kind {
			n++
		}
	}
	return n
}

// await waits until check, called with the state after every change, returns nil.
func (r *stateRecorder) await(t testing.TB, what string, check func(state map[string]sdk.Service) error) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		err := errors.New("not synced yet")
		if r.synced {
			err = check(r.state)
		}
		r.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("%s: not within %s: %v\nlog:\n%s", what, wait, err, r.dump(0))
		}
	}
}

// awaitEvent waits for an event after mark that matches.
func (r *stateRecorder) awaitEvent(t testing.TB, mark int, what string, match func(emitted) bool) emitted {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		for _, ev := range r.since(mark) {
			if match(ev) {
				return ev
			}
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("%s: not within %s\nlog:\n%s", what, wait, r.dump(mark))
		}
	}
}

func (r *stateRecorder) service(key string) (sdk.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[key]
	return s, ok
}

func (r *stateRecorder) dump(mark int) string {
	var b strings.Builder
	for _, ev := range r.since(mark) {
		fmt.Fprintf(&b, "  %s %s n=%d ok=%v %s\n", ev.kind, ev.key, ev.n, ev.ok, clip(ev.msg, 200))
	}
	return b.String()
}

// hasAddresses checks that key exists with exactly the given instance addresses.
func hasAddresses(key string, want ...string) func(map[string]sdk.Service) error {
	slices.Sort(want)
	return func(state map[string]sdk.Service) error {
		s, ok := state[key]
		if !ok {
			return fmt.Errorf("%s missing; have %v", key, slices.Sorted(maps.Keys(state)))
		}
		var got []string
		for _, in := range s.Instances {
			got = append(got, in.Address)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s has %v, want %v", key, got, want)
		}
		return nil
	}
}

func absent(key string) func(map[string]sdk.Service) error {
	return func(state map[string]sdk.Service) error {
		if _, ok := state[key]; ok {
			return fmt.Errorf("%s still present", key)
		}
		return nil
	}
}

// checkValid fails unless every service passes model.Validate unchanged.
func checkValid(t testing.TB, svcs ...sdk.Service) {
	t.Helper()
	for _, s := range svcs {
		valid, rej, ok := model.Validate(s)
		if !ok || len(rej) > 0 || !valid.Equal(s) {
			t.Fatalf("service %s does not validate unchanged: ok=%v rejections=%v", s.Key, ok, rej)
		}
	}
}

// ---------------------------------------------------------------------------------------
// Running the plugin in process.

type runningPlugin struct {
	p   *Plugin
	rec *stateRecorder
	// stop cancels Watch and waits for it to return; it runs at cleanup if not before.
	stop func()
}

// runPlugin configures the plugin and runs Watch until stop or the end of the test; Watch
// must return promptly when cancelled.
func runPlugin(t testing.TB, address string, opts, secrets map[string]string) *runningPlugin {
	t.Helper()
	p := New().(*Plugin)
	if err := p.Configure(context.Background(), sdk.Config{Registry: "consul-test", Address: address, Options: opts, Secrets: secrets}); err != nil {
		t.Fatalf("configure: %v", err)
	}
	rec := newStateRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, rec) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Watch returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Watch did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &runningPlugin{p: p, rec: rec, stop: stop}
}

// ---------------------------------------------------------------------------------------
// Writing to Consul as applications do.

type registrar struct {
	t      testing.TB
	c      *api.Client
	prefix string // unique per test: every service name starts with it
}

func newRegistrar(t testing.TB, address, token string) *registrar {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: address, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	r := &registrar{t: t, c: c, prefix: fmt.Sprintf("t%06x", rand.Uint32()>>8)}
	t.Cleanup(r.cleanup)
	return r
}

// name is a service name of this test.
func (r *registrar) name(s string) string { return r.prefix + "-" + s }

// pattern matches this test's services, for the services option.
func (r *registrar) pattern() string { return r.prefix + "-*" }

// register registers an instance with the local agent, with a passing TTL check.
func (r *registrar) register(reg api.AgentServiceRegistration) {
	r.t.Helper()
	if reg.Check == nil && reg.Checks == nil {
		reg.Check = &api.AgentServiceCheck{CheckID: checkID(reg.ID), TTL: "10m", Status: api.HealthPassing}
	}
	if err := r.c.Agent().ServiceRegister(&reg); err != nil {
		r.t.Fatalf("registering %s: %v", reg.ID, err)
	}
}

func checkID(serviceID string) string { return "ttl-" + serviceID }

// setCheck sets an instance's TTL check status.
func (r *registrar) setCheck(serviceID, status string) {
	r.t.Helper()
	if err := r.c.Agent().UpdateTTL(checkID(serviceID), "set by test", status); err != nil {
		r.t.Fatalf("updating check of %s: %v", serviceID, err)
	}
}

func (r *registrar) deregister(id string) {
	r.t.Helper()
	if err := r.c.Agent().ServiceDeregister(id); err != nil {
		r.t.Fatalf("deregistering %s: %v", id, err)
	}
}

// registerExternal registers a service on a node of its own through the catalog, as
// external-service monitors do: no agent owns it, and node meta can be set.
func (r *registrar) registerExternal(node, address string, nodeMeta map[string]string, svc *api.AgentService) {
	r.t.Helper()
	_, err := r.c.Catalog().Register(&api.CatalogRegistration{Node: node, Address: address, NodeMeta: nodeMeta, Service: svc}, nil)
	if err != nil {
		r.t.Fatalf("catalog register %s: %v", svc.ID, err)
	}
}

// cleanup removes whatever this test registered, agent services and external nodes alike.
func (r *registrar) cleanup() {
	services, err := r.c.Agent().Services()
	if err == nil {
		for id, s := range services {
			if strings.HasPrefix(s.Service, r.prefix) {
				_ = r.c.Agent().ServiceDeregister(id)
			}
		}
	}
	nodes, _, err := r.c.Catalog().Nodes(nil)
	if err == nil {
		for _, n := range nodes {
			if strings.HasPrefix(n.Node, r.prefix) {
				_, _ = r.c.Catalog().Deregister(&api.CatalogDeregistration{Node: n.Node}, nil)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that can cut the plugin off from Consul.

type tcpProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.block() })
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// block closes every connection and refuses new ones until unblock.
func (p *tcpProxy) block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}
