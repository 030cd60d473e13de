package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Retry and pacing of the query loops.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
	// minQueryInterval spaces the queries of one loop when Consul answers at once (a service
	// that changes all the time), as Consul's guidance on blocking queries asks.
	minQueryInterval = 100 * time.Millisecond
	// With more services than maxWatches, watches take turns: each blocking query then waits
	// about turnTime*maxWatches/services (at least minTurnWait), so every service is queried
	// again within about max(turnTime, services/maxWatches seconds).
	turnTime    = 10 * time.Second
	minTurnWait = time.Second
	// requestSlack is added to a blocking query's wait (plus Consul's 1/16 jitter) before the
	// request is abandoned as hung.
	requestSlack = 15 * time.Second
)

// watchStats are counters of a running watch, read by tests and benchmarks.
type watchStats struct {
	snapshots atomic.Int64
	resyncs   atomic.Int64
	queries   atomic.Int64
	// watched is the number of services with a running health watch.
	watched atomic.Int64
	// blocking is the number of blocking health queries in flight; maxBlocking the most seen.
	blocking    atomic.Int64
	maxBlocking atomic.Int64
}

// dcWatch is one datacenter: its catalog watch and the services in it.
type dcWatch struct {
	// query is the dc parameter sent ("" for the agent's own); name is the real name, used in
	// keys, hosts and localities.
	query, name string
	listed      bool // the catalog was read at least once in this generation
	err         error
	services    map[string]*serviceWatch // by service name
}

// serviceWatch is one service's health watch.
type serviceWatch struct {
	dc      *dcWatch
	name    string
	key     string
	cancel  context.CancelFunc
	fetched bool // a health result arrived in this generation
	err     error
	built   catalog.Service
	ok      bool // built has instances
}

// message is what the query goroutines report to the run loop.
type message struct {
	gen     int
	dc      *dcWatch
	svc     *serviceWatch // nil for catalog results
	names   []string      // catalog: service names
	entries []*api.ServiceEntry
	// filtered says the ACL token hid part of the catalog.
	filtered bool
	err      error
	// backwards reports an index that went back: the server's state was replaced.
	backwards string
}

// watcher runs one Watch call. Query goroutines only read Consul and send messages; the run
// loop owns all state and is the only one to emit.
type watcher struct {
	cfg    *config
	client *api.Client
	e      sdk.Emitter
	log    *slog.Logger
	stats  *watchStats

	watchSlots chan struct{}
	fetchSlots chan struct{}
	msgs       chan message
	wg         sync.WaitGroup

	gen       int
	genCtx    context.Context // ends the current generation's goroutines
	genCancel context.CancelFunc
	dcs       []*dcWatch
	unread    int // services of this generation not read yet
	// synced is false while a listing is under way: what a partial listing holds is stated
	// only with the complete one, in its snapshot.
	synced      bool
	lastResync  time.Time
	resyncDelay time.Duration
	filteredLog map[string]bool
}

func newWatcher(cfg *config, client *api.Client, e sdk.Emitter, stats *watchStats) *watcher {
	return &watcher{
		cfg: cfg, client: client, e: e, stats: stats,
		log:         sdk.Logger().With("registry", cfg.registry, "consul", cfg.url()),
		watchSlots:  make(chan struct{}, cfg.maxWatches),
		fetchSlots:  make(chan struct{}, fetchConcurrency),
		msgs:        make(chan message),
		filteredLog: map[string]bool{},
	}
}

func (w *watcher) run(ctx context.Context) error {
	defer w.wg.Wait()
	w.e.Health(false, "connecting to Consul at "+w.cfg.url())
	dcs, ok := w.datacenters(ctx)
	if !ok {
		return nil
	}
	w.dcs = dcs
	w.start(ctx)
	defer func() {
		w.genCancel()
		for _, dc := range w.dcs {
			w.stats.watched.Add(-int64(len(dc.services)))
		}
	}()

	restart := time.NewTimer(time.Hour)
	restart.Stop()
	defer restart.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-restart.C:
			w.start(ctx)
		case m := <-w.msgs:
			if m.gen != w.gen {
				continue // from a generation a resync ended
			}
			if m.backwards != "" {
				restart.Reset(w.resync(m.backwards))
				continue
			}
			if m.svc == nil {
				w.catalog(m)
			} else {
				w.service(m)
			}
			w.maybeSnapshot()
			w.reportHealth()
		}
	}
}

// datacenters resolves what to watch. Without configured datacenters the agent's own is
// asked for its name, which keys, hosts and localities need.
func (w *watcher) datacenters(ctx context.Context) ([]*dcWatch, bool) {
	if len(w.cfg.datacenters) > 0 {
		out := make([]*dcWatch, len(w.cfg.datacenters))
		for i, dc := range w.cfg.datacenters {
			out[i] = &dcWatch{query: dc, name: dc}
		}
		return out, true
	}
	var b backoff
	for {
		name, err := w.localDatacenter(ctx)
		if err == nil {
			w.log.Info("watching the agent's datacenter", "datacenter", name)
			return []*dcWatch{{name: name}}, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		w.e.Health(false, "finding the agent's datacenter: "+err.Error())
		if !sdk.Sleep(ctx, b.next()) {
			return nil, false
		}
	}
}

func (w *watcher) localDatacenter(ctx context.Context) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, requestSlack)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(rctx)
	var self struct{ Config struct{ Datacenter string } }
	_, err := w.client.Raw().Query("/v1/agent/self", &self, q)
	if err == nil && self.Config.Datacenter != "" {
		return self.Config.Datacenter, nil
	}
	// Without agent:read, the catalog's datacenter list (sorted by distance) starts with ours.
	var dcs []string
	_, derr := w.client.Raw().Query("/v1/catalog/datacenters", &dcs, q)
	if derr == nil && len(dcs) > 0 {
		return dcs[0], nil
	}
	return "", errors.Join(err, derr)
}

// start begins a generation: a catalog watch per datacenter, each starting health watches.
func (w *watcher) start(ctx context.Context) {
	w.genCtx, w.genCancel = context.WithCancel(ctx)
	w.gen++
	w.unread = 0
	for _, dc := range w.dcs {
		dc.listed, dc.err, dc.services = false, nil, map[string]*serviceWatch{}
		gctx, gen := w.genCtx, w.gen
		w.wg.Go(func() { w.watchCatalog(gctx, gen, dc) })
	}
}

// resync drops everything watched and returns how long to wait before listing again: the
// next complete picture is reported as a new snapshot, so whatever went away with the
// server's old state is removed then, and nothing before.
func (w *watcher) resync(reason string) time.Duration {
	w.stats.resyncs.Add(1)
	w.genCancel()
	w.gen++ // messages of the old generation are ignored from now on
	for _, dc := range w.dcs {
		w.stats.watched.Add(-int64(len(dc.services)))
		dc.services = nil
	}
	w.synced = false
	// Resyncs in quick succession (an index flapping between two clusters behind one address)
	// back off; an isolated one starts at once.
	if time.Since(w.lastResync) < time.Minute {
		w.resyncDelay = min(max(2*w.resyncDelay, minBackoff), maxBackoff)
	} else {
		w.resyncDelay = 0
	}
	w.lastResync = time.Now()
	w.log.Warn("a Consul index went backwards; listing everything again", "reason", reason, "after", w.resyncDelay)
	w.e.Health(false, "Consul's state was replaced ("+reason+"); listing everything again")
	return w.resyncDelay
}

// catalog applies a datacenter's service list: new services get a health watch, removed
// ones lose theirs and are deleted.
func (w *watcher) catalog(m message) {
	dc := m.dc
	if m.err != nil {
		if dc.err == nil {
			w.log.Warn("reading the Consul catalog failed; retrying", "datacenter", dc.name, "error", m.err)
		}
		dc.err = m.err
		return
	}
	if dc.err != nil {
		w.log.Info("reading the Consul catalog again", "datacenter", dc.name)
	}
	dc.listed, dc.err = true, nil
	if m.filtered && !w.filteredLog[dc.name] {
		w.filteredLog[dc.name] = true
		w.log.Warn("the ACL token hides part of the catalog; only the services it can read are imported", "datacenter", dc.name)
	}
	want := map[string]bool{}
	for _, name := range m.names {
		if w.cfg.wanted(name) {
			want[name] = true
		}
	}
	for name, s := range dc.services {
		if !want[name] {
			s.cancel()
			delete(dc.services, name)
			w.stats.watched.Add(-1)
			if !s.fetched {
				w.unread--
			}
			w.drop(s.key)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if dc.services[name] != nil {
			continue
		}
		// A resync ends the watch through the generation's context, a removal through its own.
		sctx, cancel := context.WithCancel(w.genCtx)
		s := &serviceWatch{dc: dc, name: name, key: dc.name + "/" + name, cancel: cancel}
		dc.services[name] = s
		w.stats.watched.Add(1)
		w.unread++
		gen := w.gen
		w.wg.Go(func() { w.watchService(sctx, gen, s) })
	}
}

// drop forgets a service that left the catalog.
func (w *watcher) drop(key string) {
	if w.synced {
		w.e.Remove(key)
	}
}

// service applies a health result.
func (w *watcher) service(m message) {
	s := m.svc
	if s.dc.services[s.name] != s {
		return // removed meanwhile
	}
	if m.err != nil {
		if s.err == nil {
			w.log.Warn("reading a Consul service failed; retrying", "service", s.key, "error", m.err)
		}
		s.err = m.err
		return
	}
	s.err = nil
	if !s.fetched {
		s.fetched = true
		w.unread--
	}
	svc, rejected, ok := buildService(w.cfg, serviceInput{Key: s.key, Name: s.name, Datacenter: s.dc.name, Entries: m.entries})
	for _, r := range rejected {
		w.e.Reject(r.item, r.reason)
	}
	s.built, s.ok = svc, ok
	if !w.synced {
		return
	}
	if ok {
		w.e.Set(svc)
	} else {
		w.e.Remove(s.key)
	}
}

// maybeSnapshot reports the snapshot once every datacenter was listed and every service in
// it read: an incomplete one would delete what is merely not read yet.
func (w *watcher) maybeSnapshot() {
	if w.synced || w.unread > 0 {
		return
	}
	for _, dc := range w.dcs {
		if !dc.listed {
			return
		}
	}
	var services []catalog.Service
	for _, dc := range w.dcs {
		for _, s := range dc.services {
			if s.ok {
				services = append(services, s.built)
			}
		}
	}
	slices.SortFunc(services, func(a, b catalog.Service) int { return strings.Compare(a.Key, b.Key) })
	instances := 0
	for _, s := range services {
		instances += len(s.Instances)
	}
	w.e.Snapshot(services)
	w.synced = true
	w.stats.snapshots.Add(1)
	w.log.Info("listed Consul", "datacenters", len(w.dcs), "services", len(services), "instances", instances, "watches", w.stats.watched.Load())
}

// reportHealth sums up the datacenters' state.
func (w *watcher) reportHealth() {
	var problems []string
	for _, dc := range w.dcs {
		if dc.err != nil {
			problems = append(problems, fmt.Sprintf("datacenter %s: %v", dc.name, dc.err))
		}
	}
	switch {
	case len(problems) > 0:
		w.e.Health(false, catalog.Clip(strings.Join(problems, "; "), 1024))
	case !w.synced:
		w.e.Health(false, fmt.Sprintf("listing Consul: %d services not read yet", w.unread))
	default:
		w.e.Health(true, "")
	}
}

// send hands a message to the run loop unless ctx ended.
func (w *watcher) send(ctx context.Context, m message) bool {
	select {
	case w.msgs <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchCatalog follows one datacenter's service list.
func (w *watcher) watchCatalog(ctx context.Context, gen int, dc *dcWatch) {
	what := "catalog index of datacenter " + dc.name
	w.follow(ctx, message{gen: gen, dc: dc}, what, func(blocking bool) (chan struct{}, time.Duration) {
		if blocking {
			return nil, w.cfg.waitTime
		}
		return nil, 0
	}, func(q *api.QueryOptions) (*api.QueryMeta, func(*message), error) {
		services, meta, err := w.client.Catalog().Services(q)
		return meta, func(m *message) {
			m.names = slices.Collect(maps.Keys(services))
			m.filtered = meta.ResultsFilteredByACLs
		}, err
	})
}

// watchService follows one service's healthy instances.
func (w *watcher) watchService(ctx context.Context, gen int, s *serviceWatch) {
	w.follow(ctx, message{gen: gen, dc: s.dc, svc: s}, "health index of "+s.key, func(blocking bool) (chan struct{}, time.Duration) {
		// A read that does not block takes one of the short-read slots.
		if blocking {
			return w.watchSlots, w.blockingWait()
		}
		return w.fetchSlots, 0
	}, func(q *api.QueryOptions) (*api.QueryMeta, func(*message), error) {
		entries, meta, err := w.client.Health().Service(s.name, "", !w.cfg.includeWarning, q)
		return meta, func(m *message) { m.entries = entries }, err
	})
}

// follow runs one blocking-query loop until ctx ends or the index goes backwards, sending
// every change and every error to the run loop. pace gives the slots to hold (nil: none)
// and the wait of the next query; read runs it.
func (w *watcher) follow(ctx context.Context, base message, what string,
	pace func(blocking bool) (chan struct{}, time.Duration),
	read func(*api.QueryOptions) (*api.QueryMeta, func(*message), error)) {
	var l queryLoop
	for ctx.Err() == nil {
		l.pace(ctx)
		slots, wait := pace(l.blocking())
		if slots != nil && !acquire(ctx, slots) {
			return
		}
		counted := slots == w.watchSlots
		if counted {
			storeMax(&w.stats.maxBlocking, w.stats.blocking.Add(1))
		}
		var fill func(*message)
		meta, err := l.query(ctx, base.dc.query, wait, func(q *api.QueryOptions) (meta *api.QueryMeta, err error) {
			meta, fill, err = read(q)
			return meta, err
		})
		if counted {
			w.stats.blocking.Add(-1)
		}
		if slots != nil {
			<-slots
		}
		w.stats.queries.Add(1)
		if errors.Is(err, errUnverified) {
			continue
		}
		m := base
		switch next, ok := l.result(ctx, meta, err); {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.err = err
		case !ok:
			m.backwards = fmt.Sprintf("%s went from %d to %d", what, l.index, next)
		case next == l.index:
			continue // the wait ended without a change
		default:
			l.index = next
			fill(&m)
		}
		if !w.send(ctx, m) || m.backwards != "" {
			return
		}
		if m.err != nil && !sdk.Sleep(ctx, l.b.next()) {
			return
		}
	}
}

// blockingWait is how long a blocking health query may hold its slot.
func (w *watcher) blockingWait() time.Duration {
	n, k := w.stats.watched.Load(), int64(w.cfg.maxWatches)
	if n <= k {
		return w.cfg.waitTime
	}
	return min(w.cfg.waitTime, max(minTurnWait, time.Duration(int64(turnTime)*k/n)))
}

// queryLoop is the state of one blocking-query loop: the index, pacing and backoff.
type queryLoop struct {
	index uint64
	// probe is set after a failed query, and when a blocking query came back with a lower
	// index. A blocking query whose index is ahead of the server's (a server restarted with
	// older state) would wait its full time before showing that, so the next query does not
	// block: a consistent read returns the current index at once.
	probe     bool
	lastStart time.Time
	b         backoff
}

// blocking reports whether the next query should wait for a change.
func (l *queryLoop) blocking() bool { return l.index > 0 && !l.probe }

// errUnverified ends a blocking query that net/http, its connection broken, sent again on
// a new connection. The server at the other end may not be the one that gave the loop its
// index: restarted with older state, it would hold a query ahead of its index for the full
// wait before showing that. So the loop asks without blocking first, as after any error.
var errUnverified = errors.New("blocking query resent on a new connection")

// pace waits until the loop's next query may start.
func (l *queryLoop) pace(ctx context.Context) {
	if d := minQueryInterval - time.Since(l.lastStart); d > 0 {
		sdk.Sleep(ctx, d)
	}
}

// query runs one query with the loop's index, waiting for a change for at most wait (0: do
// not block).
func (l *queryLoop) query(ctx context.Context, dc string, wait time.Duration, do func(*api.QueryOptions) (*api.QueryMeta, error)) (*api.QueryMeta, error) {
	l.lastStart = time.Now()
	// A hung connection must not stall the loop past the longest answer Consul can give.
	rctx, cancel := context.WithTimeout(ctx, wait+wait/16+requestSlack)
	defer cancel()
	// A read that does not block is consistent: right after a restart or an election a
	// server may answer from state it is still replaying, which must not pass for the
	// registry's content (nor for an index that went backwards).
	q := &api.QueryOptions{Datacenter: dc, RequireConsistent: wait == 0}
	var conns atomic.Int32
	if wait > 0 {
		q.WaitIndex, q.WaitTime = l.index, wait
		rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
			if conns.Add(1) > 1 {
				cancel()
			}
		}})
	}
	meta, err := do(q.WithContext(rctx))
	if conns.Load() > 1 && ctx.Err() == nil {
		l.probe = true
		return nil, errUnverified
	}
	return meta, err
}

// result checks a query's index the way Consul's guidance on blocking queries says: an
// index of 0 is taken as 1, and one lower than before means the server's state was
// replaced (ok false). Only a consistent read may say so; a blocking query that comes back
// lower makes the next query such a read.
func (l *queryLoop) result(ctx context.Context, meta *api.QueryMeta, err error) (next uint64, ok bool) {
	wasProbe := !l.blocking()
	if err != nil || meta == nil || ctx.Err() != nil {
		l.probe = true
		return l.index, true
	}
	l.b.reset()
	next = max(meta.LastIndex, 1)
	if next < l.index && !wasProbe {
		l.probe = true
		return l.index, true
	}
	l.probe = false
	return next, next >= l.index
}

func storeMax(v *atomic.Int64, n int64) {
	for m := v.Load(); n > m; m = v.Load() {
		if v.CompareAndSwap(m, n) {
			return
		}
	}
}

type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	b.d = min(max(2*b.d, minBackoff), maxBackoff)
	return b.d/2 + rand.N(b.d/2+1)
}

func (b *backoff) reset() { b.d = 0 }

func acquire(ctx context.Context, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}
