package nacos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// Backoff of the first listing while Nacos cannot be reached.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// connCheckInterval is how often the connection state is read. It is a local check unless
// the gRPC connection is down.
const connCheckInterval = 500 * time.Millisecond

// maxSubscribeAttempts bounds how often the first listing is repeated for a service that
// cannot be subscribed to before the snapshot goes out without it.
const maxSubscribeAttempts = 3

// Subscriptions are checked by subscribing again: once, a listing interval after they
// start, and then while they have no instance, at growing intervals up to maxVerifyDelay.
// A push can be lost when a service's first instances arrive while it is being subscribed
// to (the library drops an update that carries the same timestamp as the one it has, and
// servers may answer a subscription before they index it).
const maxVerifyDelay = 5 * time.Minute

// maxVerifyPerList bounds the checks of one listing pass, so that starting with thousands of
// services does not hold up pushes; the rest are checked at the next passes.
const maxVerifyPerList = 100

// shutdownBudget bounds the unsubscribing when the watch ends.
const shutdownBudget = 2 * time.Second

// subscription is one subscribed Nacos service.
type subscription struct {
	id          serviceID
	key         string     // the mesh service it is part of
	dubbo       *dubboName // set for Dubbo providers
	gen         uint64     // tells this subscription's pushes from an earlier one's
	unsubscribe func()
	instances   []catalog.Instance
	verifyAt    time.Time     // when to subscribe again to check; zero: never
	verifyDelay time.Duration // the delay before the last check
	// missing is set when the service left the listing during the recovery grace; it is
	// unsubscribed when the grace ends.
	missing bool
}

// push is an instance list from the client library, waiting for the run loop.
type push struct {
	gen   uint64
	hosts []nacosmodel.Instance
}

type connState struct {
	ok  bool
	msg string
}

// watcher runs one Watch call: the subscriptions and the recovery grace.
// Everything but pending is touched by the run loop only.
type watcher struct {
	cfg   *config
	e     sdk.Emitter
	log   *slog.Logger
	stats *watchStats
	conv  converter
	reg   registry

	mu      sync.Mutex
	pending map[serviceID]push
	notify  chan struct{}

	subs       map[serviceID]*subscription
	skipped    map[serviceID]bool // listed but not imported (Dubbo consumers, bad names)
	subFailed  map[serviceID]int  // failed subscription attempts in a row
	keys       map[string]map[serviceID]*subscription
	dirty      map[string]bool
	graceKeys  map[string]bool // keys whose output kept missing instances
	nextGen    uint64
	connected  bool
	listErr    string
	graceUntil time.Time
	grace      *time.Timer
	backoff    time.Duration
}

func newWatcher(cfg *config, e sdk.Emitter, stats *watchStats) *watcher {
	return &watcher{
		cfg: cfg, e: e, stats: stats,
		log:     sdk.Logger().With("registry", cfg.registry, "nacos", serverList(cfg.servers)),
		conv:    converter{clusters: cfg.clusters, defaultProtocol: cfg.defaultProtocol},
		pending: map[serviceID]push{}, notify: make(chan struct{}, 1),
		subs: map[serviceID]*subscription{}, skipped: map[serviceID]bool{}, subFailed: map[serviceID]int{},
		keys: map[string]map[serviceID]*subscription{}, dirty: map[string]bool{},
		graceKeys: map[string]bool{}, connected: true,
	}
}

func (w *watcher) run(ctx context.Context, reg registry) error {
	w.reg = reg
	defer w.stats.subscriptions.Store(0) // closing the registry ends every subscription
	w.reportHealth(false, "connecting to Nacos at "+serverList(w.cfg.servers))

	conn := make(chan connState, 1)
	go w.monitor(ctx, conn)

	// The first listing must be complete: a snapshot replaces everything the host knew.
	for {
		err := w.list(ctx, true)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.log.Info("listing Nacos failed; retrying", "error", err)
		w.reportHealth(false, err.Error())
		if !sdk.Sleep(ctx, w.nextBackoff()) {
			return nil
		}
	}
	w.applyPushes()
	w.snapshot()

	list := time.NewTicker(w.cfg.listInterval)
	defer list.Stop()
	w.grace = time.NewTimer(time.Hour)
	w.grace.Stop()
	defer w.grace.Stop()
	for {
		select {
		case <-ctx.Done():
			w.shutdown()
			return nil
		case <-w.notify:
			w.applyPushes()
		case <-list.C:
			w.listed(w.list(ctx, false))
		case st := <-conn:
			w.connectionChanged(st)
		case <-w.grace.C:
			w.endGrace()
		}
		w.flush()
	}
}

// shutdown tells the server, within shutdownBudget, that the subscriptions end, so that it
// stops pushing before the connection closes: a push the server never sees acknowledged
// stays pending on its side (and some Nacos-protocol servers handle that badly). When the
// connection is down, closing it is all there is to do.
func (w *watcher) shutdown() {
	if ok, _ := w.reg.Connected(); !ok {
		return
	}
	deadline := time.Now().Add(shutdownBudget)
	for _, s := range w.subs {
		if time.Now().After(deadline) {
			return
		}
		s.unsubscribe()
	}
	// Let pushes already on their way arrive and be acknowledged.
	time.Sleep(100 * time.Millisecond)
}

// monitor reports changes of the connection state; the channel holds the latest only.
func (w *watcher) monitor(ctx context.Context, out chan connState) {
	t := time.NewTicker(connCheckInterval)
	defer t.Stop()
	last := connState{ok: true}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, msg := w.reg.Connected()
		if st := (connState{ok, msg}); st != last {
			last = st
			select {
			case <-out:
			default:
			}
			out <- st
		}
	}
}

// list reads the service lists, subscribes to new services and drops those that are gone.
// It returns an error when a list could not be read or, with strict, when a subscription
// failed fewer than maxSubscribeAttempts times in a row; what could be listed is applied
// either way.
func (w *watcher) list(ctx context.Context, strict bool) error {
	var errs []string
	namespaces := w.cfg.sel.namedIDs()
	nsComplete := true
	if w.cfg.sel.all {
		all, err := w.reg.Namespaces(ctx)
		if err != nil {
			errs = append(errs, "listing namespaces: "+err.Error())
			nsComplete = false
			for id := range w.subs {
				namespaces = append(namespaces, id.namespace) // keep watching what is known
			}
		}
		namespaces = append(namespaces, all...)
		slices.Sort(namespaces)
		namespaces = slices.Compact(namespaces)
	}

	listed := map[serviceID]bool{}
	listedNS := map[string]bool{}
	for _, ns := range namespaces {
		groups, ok := w.cfg.sel.groupsFor(ns)
		if !ok {
			continue
		}
		ids, err := w.reg.Services(ctx, ns, groups)
		if err != nil {
			errs = append(errs, fmt.Sprintf("listing namespace %s, groups %s: %v", ns, groups, err))
			continue
		}
		listedNS[ns] = true
		for _, id := range ids {
			listed[id] = true
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	for _, id := range slices.SortedFunc(maps.Keys(listed), compareIDs) {
		if s := w.subs[id]; s != nil {
			s.missing = false
			continue
		}
		if w.skipped[id] {
			continue
		}
		if err := w.subscribe(id); err != nil {
			w.subFailed[id]++
			if strict && w.subFailed[id] < maxSubscribeAttempts {
				errs = append(errs, err.Error())
			} else {
				w.reject(id.String(), "cannot subscribe: "+err.Error())
			}
		}
	}

	// A service is gone when its namespace was listed without it, or its namespace is gone.
	// Nothing is removed for a namespace that could not be listed.
	for id, s := range w.subs {
		if listed[id] || !listedNS[id.namespace] && (!nsComplete || slices.Contains(namespaces, id.namespace)) {
			continue
		}
		if w.inGrace() {
			s.missing = true
			continue
		}
		w.drop(s)
	}
	w.verify(time.Now())
	for id := range w.skipped {
		if !listed[id] && listedNS[id.namespace] {
			delete(w.skipped, id)
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	w.stats.listings.Add(1)
	return nil
}

func compareIDs(a, b serviceID) int { return strings.Compare(a.String(), b.String()) }

// subscribe starts watching a newly listed service.
func (w *watcher) subscribe(id serviceID) error {
	key, dubbo, ok := w.classify(id)
	if !ok {
		w.skipped[id] = true
		return nil
	}
	s := &subscription{id: id, key: key, dubbo: dubbo}
	if err := w.open(s); err != nil {
		return err
	}
	delete(w.subFailed, id)
	s.verifyDelay = w.cfg.listInterval
	s.verifyAt = time.Now().Add(s.verifyDelay)
	w.subs[id] = s
	if w.keys[key] == nil {
		w.keys[key] = map[serviceID]*subscription{}
	}
	w.keys[key][id] = s
	w.stats.subscriptions.Add(1)
	return nil
}

// open subscribes; pushes of an earlier subscription of s are ignored from now on.
func (w *watcher) open(s *subscription) error {
	w.nextGen++
	gen, id := w.nextGen, s.id
	unsubscribe, err := w.reg.Subscribe(id, func(hosts []nacosmodel.Instance) { w.pushed(id, gen, hosts) })
	if err != nil {
		return err
	}
	s.gen, s.unsubscribe = gen, unsubscribe
	return nil
}

// verify subscribes again to the subscriptions due for a check (see maxVerifyDelay). The
// library answers a new subscription with the server's current list, so what was missed
// arrives as a push.
func (w *watcher) verify(now time.Time) {
	var due []*subscription
	for _, s := range w.subs {
		if !s.verifyAt.IsZero() && !now.Before(s.verifyAt) {
			due = append(due, s)
		}
	}
	slices.SortFunc(due, func(a, b *subscription) int { return a.verifyAt.Compare(b.verifyAt) })
	for _, s := range due[:min(len(due), maxVerifyPerList)] {
		id := s.id
		s.unsubscribe()
		if err := w.open(s); err != nil {
			// No subscription now: try again at the next listing, keeping what is known.
			s.unsubscribe, s.verifyAt = func() {}, now
			w.log.Debug("subscribing again failed", "service", id.String(), "error", err)
			continue
		}
		w.stats.verifications.Add(1)
		s.verifyAt = time.Time{}
		if len(s.instances) == 0 {
			s.verifyDelay = min(2*s.verifyDelay, maxVerifyDelay)
			s.verifyAt = now.Add(s.verifyDelay)
		}
	}
}

// classify tells which mesh service a Nacos service belongs to; ok is false for services
// that are not imported.
func (w *watcher) classify(id serviceID) (key string, dubbo *dubboName, ok bool) {
	d, isDubbo, err := parseDubboName(id.name)
	switch {
	case err != nil:
		w.reject(id.String(), err.Error())
		return "", nil, false
	case isDubbo && d.category != dubboProviders:
		w.log.Debug("not importing Dubbo registration", "service", id.String(), "category", d.category)
		return "", nil, false
	case isDubbo:
		return d.key(), &d, true
	}
	return id.String(), nil, true
}

// drop unsubscribes from a service that is gone.
func (w *watcher) drop(s *subscription) {
	s.unsubscribe()
	delete(w.subs, s.id)
	if delete(w.keys[s.key], s.id); len(w.keys[s.key]) == 0 {
		delete(w.keys, s.key)
	}
	w.dirty[s.key] = true
	w.stats.subscriptions.Add(-1)
	w.mu.Lock()
	delete(w.pending, s.id)
	w.mu.Unlock()
	w.log.Debug("service left the listing; unsubscribed", "service", s.id.String())
}

// pushed is called by the client library; it must not block.
func (w *watcher) pushed(id serviceID, gen uint64, hosts []nacosmodel.Instance) {
	w.mu.Lock()
	w.pending[id] = push{gen: gen, hosts: hosts}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// applyPushes converts the instance lists pushed since the last call.
func (w *watcher) applyPushes() {
	w.mu.Lock()
	taken := w.pending
	w.pending = map[serviceID]push{}
	w.mu.Unlock()
	for id, p := range taken {
		s := w.subs[id]
		if s == nil || s.gen != p.gen {
			continue // pushed for a subscription that has ended
		}
		insts, rejected := w.conv.convert(id, s.dubbo, p.hosts)
		for _, r := range rejected {
			w.reject(r.item, r.reason)
		}
		s.instances = insts
		w.dirty[s.key] = true
	}
}

// snapshot reports every service; the host replaces what it knew with it.
func (w *watcher) snapshot() {
	services := make([]catalog.Service, 0, len(w.keys))
	instances := 0
	for _, key := range slices.Sorted(maps.Keys(w.keys)) {
		if svc, ok := w.build(key); ok {
			services = append(services, svc)
			instances += len(svc.Instances)
		}
	}
	clear(w.dirty)
	w.e.Snapshot(services)
	w.stats.snapshots.Add(1)
	w.backoff = 0
	w.reportHealth(true, "")
	w.log.Info("listed Nacos", "services", len(services), "instances", instances, "subscriptions", len(w.subs))
}

// flush states the services that changed.
func (w *watcher) flush() {
	keys := slices.Sorted(maps.Keys(w.dirty))
	clear(w.dirty)
	for _, k := range keys {
		w.sync(k)
	}
}

// sync states one service's current state. During the recovery grace, instances that are
// missing now are kept, and nothing is removed.
func (w *watcher) sync(key string) {
	svc, ok := w.build(key)
	if prev, had := w.e.Sent(key); had && w.inGrace() {
		svc, ok = keepMissing(prev, svc, ok), true
		w.graceKeys[key] = true
	}
	if ok {
		w.e.Set(svc)
	} else {
		w.e.Remove(key)
	}
}

// keepMissing adds to cur the instances of prev that cur lacks (by address, port and
// protocol); cur's own instances win.
func keepMissing(prev, cur catalog.Service, curOK bool) catalog.Service {
	if !curOK {
		return prev
	}
	type endpoint struct {
		addr  string
		port  uint32
		proto string
	}
	have := make(map[endpoint]bool, len(cur.Instances))
	for _, in := range cur.Instances {
		have[endpoint{in.Address, in.Port, in.Protocol}] = true
	}
	out := cur
	out.Instances = slices.Clone(cur.Instances)
	for _, in := range prev.Instances {
		if !have[endpoint{in.Address, in.Port, in.Protocol}] {
			out.Instances = append(out.Instances, in)
		}
	}
	out.Normalize()
	return out
}

// build computes a service's state from its subscriptions; ok is false when it has no
// instance or its host is invalid.
func (w *watcher) build(key string) (catalog.Service, bool) {
	subs := w.keys[key]
	var insts []catalog.Instance
	var one *subscription
	for _, s := range subs {
		insts = append(insts, s.instances...)
		one = s
	}
	if len(insts) == 0 {
		return catalog.Service{}, false
	}
	var host string
	var err error
	if one.dubbo == nil {
		host, err = w.cfg.hosts.serviceHost(ServiceVars{Service: one.id.name, Group: one.id.group, Namespace: one.id.namespace})
	} else {
		host, err = w.cfg.hosts.dubboHost(dubbo.InterfaceVars(one.dubbo.iface, insts))
	}
	if err != nil {
		w.reject(key, err.Error())
		return catalog.Service{}, false
	}
	// The host validates the instances; a service left without a valid one becomes no
	// ServiceEntry.
	return catalog.Service{Key: key, Host: host, Instances: insts}, true
}

// listed records the outcome of a periodic listing.
func (w *watcher) listed(err error) {
	if err != nil {
		if msg := "listing Nacos services failed: " + err.Error(); msg != w.listErr {
			w.log.Warn("listing Nacos services failed; keeping what is known", "error", err)
			w.listErr = msg
		}
		w.updateHealth()
		return
	}
	if w.listErr != "" {
		// The gRPC connection may have been down without the connection check seeing it.
		w.listErr = ""
		w.startGrace("listing works again")
	}
	w.updateHealth()
}

func (w *watcher) connectionChanged(st connState) {
	switch {
	case !st.ok && w.connected:
		w.log.Warn("connection to Nacos lost; keeping what is known", "state", st.msg)
		w.connected = false
	case st.ok && !w.connected:
		w.connected = true
		w.startGrace("reconnected")
	}
	w.updateHealth()
	if !st.ok {
		w.reportHealth(false, st.msg)
	}
}

func (w *watcher) updateHealth() {
	switch {
	case !w.connected:
	case w.listErr != "":
		w.reportHealth(false, w.listErr)
	default:
		w.reportHealth(true, "")
	}
}

// inGrace reports whether missing instances and services are kept rather than removed:
// while the connection is down and for the recovery grace after it came back, when
// applications may not have registered again yet.
func (w *watcher) inGrace() bool {
	return !w.connected || time.Now().Before(w.graceUntil)
}

func (w *watcher) startGrace(why string) {
	if w.cfg.recoveryGrace <= 0 {
		w.endGrace()
		return
	}
	w.log.Info("keeping missing instances and services for the recovery grace", "why", why, "grace", w.cfg.recoveryGrace.String())
	w.graceUntil = time.Now().Add(w.cfg.recoveryGrace)
	w.grace.Reset(w.cfg.recoveryGrace)
}

// endGrace removes what went missing during the grace.
func (w *watcher) endGrace() {
	w.graceUntil = time.Time{}
	if !w.connected {
		return // the grace starts again when the connection is back
	}
	for _, s := range w.subs {
		if s.missing {
			w.drop(s)
		}
	}
	for k := range w.graceKeys {
		w.dirty[k] = true
	}
	clear(w.graceKeys)
}

func (w *watcher) reject(item, reason string) { w.e.Reject(clip(item, 256), clip(reason, 512)) }

func (w *watcher) nextBackoff() time.Duration {
	w.backoff = min(max(2*w.backoff, minBackoff), maxBackoff)
	return w.backoff/2 + rand.N(w.backoff/2+1)
}

// reportHealth reports health with what the client library's messages may carry of
// credentials removed (redact), clipped to a size a status condition can show.
func (w *watcher) reportHealth(ok bool, msg string) { w.e.Health(ok, redact(clip(msg, 1024))) }
