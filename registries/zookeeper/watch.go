package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// readConcurrency bounds the ZooKeeper reads in flight during one refresh. The client
// pipelines them over its single connection, so a listing costs about one round trip per
// readConcurrency nodes.
const readConcurrency = 32

// Backoff for retries the client library does not do itself (resolving servers, reads that
// failed for reasons other than the connection).
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// watchStats are counters of a running watch, read by tests and benchmarks.
type watchStats struct {
	// watches is the number of watches outstanding (one per path and watch type at most).
	watches atomic.Int64
	// duplicateWatches counts watches set while the same watch was still outstanding; it
	// stays 0 unless the bookkeeping is wrong.
	duplicateWatches atomic.Int64
	snapshots        atomic.Int64
	sessions         atomic.Int64
	reads            atomic.Int64
	resyncs          atomic.Int64
	// repaired counts the services a resync found different from what was emitted.
	repaired atomic.Int64
}

// wtype is a set of ZooKeeper watch types, as the client library tracks them.
type wtype uint8

const (
	wChild wtype = 1 << iota // getChildren watch
	wData                    // getData, or exists on an existing node
	wExist                   // exists on a missing node
)

// fired returns the watch types an event triggers (the client library's own rule).
func fired(t zk.EventType) wtype {
	switch t {
	case zk.EventNodeCreated:
		return wExist
	case zk.EventNodeDataChanged:
		return wExist | wData
	case zk.EventNodeChildrenChanged:
		return wChild
	case zk.EventNodeDeleted, zk.EventNotWatching:
		return wChild | wData | wExist
	}
	return 0
}

// watcher runs one Watch call: one ZooKeeper client and its sessions.
type watcher struct {
	cfg   *config
	e     sdk.Emitter
	log   *slog.Logger
	stats *watchStats

	conn   *zk.Conn
	events eventQueue

	// Session state, changed only by the run loop.
	connected  bool  // a session is established and the connection is up
	authed     bool  // credentials were accepted once; the client re-sends them itself
	armSession int64 // session in which the watches in armed were set
	synced     int64 // session the tree was listed in; 0 until the first snapshot

	// armed holds the outstanding watches by path. ZooKeeper watches fire once and the client
	// cannot remove them, so a path's watch is set again only after it fired.
	armed map[string]wtype

	t       *tree
	dirty   map[string]*node // nodes to read again
	pending map[string]*node // nodes whose last read failed
	readErr map[string]string

	backoff time.Duration
	retry   *time.Timer

	resyncTimer *time.Timer
	resyncDue   bool

	// inject runs functions in the run loop; tests use it to reach the loop's state.
	inject chan func(*watcher)
}

func newWatcher(cfg *config, e sdk.Emitter, stats *watchStats) *watcher {
	return &watcher{
		cfg: cfg, e: e, stats: stats,
		log:     sdk.Logger().With("registry", cfg.registry, "zookeeper", strings.Join(cfg.servers, ",")+cfg.chroot),
		armed:   map[string]wtype{},
		dirty:   map[string]*node{},
		pending: map[string]*node{},
		readErr: map[string]string{},
		events:  eventQueue{notify: make(chan struct{}, 1)},
	}
}

// eventQueue receives the client's events without ever blocking it (its callback must not
// block) and keeps their order, which the run loop relies on.
type eventQueue struct {
	mu     sync.Mutex
	evs    []zk.Event
	notify chan struct{}
}

func (q *eventQueue) push(ev zk.Event) {
	q.mu.Lock()
	q.evs = append(q.evs, ev)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *eventQueue) drain() []zk.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	return evs
}

// zkLogger forwards the client library's messages at debug level.
type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Debug("zk client: " + fmt.Sprintf(format, args...))
}

func (w *watcher) run(ctx context.Context) error {
	w.e.Health(false, "connecting to ZooKeeper at "+strings.Join(w.cfg.servers, ","))
	w.retry = time.NewTimer(time.Hour)
	w.retry.Stop()
	defer w.retry.Stop()
	w.resyncTimer = time.NewTimer(time.Hour)
	w.resyncTimer.Stop()
	defer w.resyncTimer.Stop()

	var clientDone <-chan zk.Event
	for w.conn == nil {
		conn, evs, err := zk.Connect(w.cfg.servers, w.cfg.sessionTimeout,
			zk.WithEventCallback(w.events.push),
			zk.WithDialer(boundedReadDialer(receiveTimeout(w.cfg.sessionTimeout))),
			zk.WithLogger(zkLogger{w.log}),
			zk.WithLogInfo(false))
		if err == nil {
			w.conn, clientDone = conn, evs
			break
		}
		w.e.Health(false, "resolving ZooKeeper servers: "+err.Error())
		if !sdk.Sleep(ctx, w.nextBackoff()) {
			return nil
		}
	}
	w.backoff = 0
	stop := context.AfterFunc(ctx, w.conn.Close) // unblocks reads in flight
	defer stop()
	defer func() {
		// Return only once the client has stopped (it closes its event channel then), so no
		// goroutine of this watch outlives it. Events come through the callback; the channel
		// is only drained here.
		w.conn.Close()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-clientDone:
				if !ok {
					return
				}
			case <-timeout:
				w.log.Warn("ZooKeeper client did not stop within 5s")
				return
			}
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.events.notify:
		case <-w.retry.C:
			w.markPending()
		case <-w.resyncTimer.C:
			w.resyncDue = true
		case f := <-w.inject:
			f(w)
		}
		for _, ev := range w.events.drain() {
			w.handle(ev)
		}
		if !w.connected || ctx.Err() != nil {
			continue
		}
		if !w.authed && !w.authenticate() {
			continue
		}
		switch {
		case w.synced != w.armSession:
			w.fullSync(ctx)
		case w.resyncDue:
			w.resync(ctx)
		case len(w.dirty) > 0:
			w.incremental()
		}
	}
}

// scheduleResync arms the periodic resync, jittered so that several plugins do not list
// their ensembles in step.
func (w *watcher) scheduleResync() {
	w.resyncDue = false
	if w.cfg.resync > 0 {
		w.resyncTimer.Reset(w.cfg.resync - rand.N(w.cfg.resync/10+1))
	}
}

// handle applies one client event to the session state and the watch bookkeeping.
func (w *watcher) handle(ev zk.Event) {
	if ev.Type == zk.EventSession {
		w.sessionEvent(ev.State)
		return
	}
	if ev.Path == "" {
		return
	}
	if f := fired(ev.Type); f != 0 && w.armed[ev.Path]&f != 0 {
		if w.armed[ev.Path] &^= f; w.armed[ev.Path] == 0 {
			delete(w.armed, ev.Path)
		}
		w.stats.watches.Store(int64(len(w.armed)))
	}
	if ev.Type == zk.EventNotWatching {
		return // watches of a lost session: the new session re-lists everything
	}
	if n := w.t.lookup(ev.Path); n != nil {
		if n.kind == kindIfaceDir {
			n = n.iface.node // the interface node changed: look for its providers again
		}
		w.dirty[n.path] = n
	}
}

func (w *watcher) sessionEvent(state zk.State) {
	switch state {
	case zk.StateHasSession:
		sid := w.conn.SessionID()
		if sid == 0 {
			return // lost again already; a later event follows
		}
		w.connected = true
		if sid != w.armSession {
			// A new session has none of the old one's watches.
			w.stats.sessions.Add(1)
			if w.armSession != 0 {
				w.log.Info("new ZooKeeper session; listing everything again", "session", fmt.Sprintf("%#x", sid))
			}
			w.armSession = sid
			w.clearWatches()
			return
		}
		w.log.Info("reconnected to ZooKeeper; session and watches kept", "session", fmt.Sprintf("%#x", sid))
		w.markPending()
		if w.synced == sid {
			w.e.Health(true, "")
		}
	case zk.StateExpired:
		w.connected = false
		w.clearWatches()
		w.log.Warn("ZooKeeper session expired")
		w.e.Health(false, "ZooKeeper session expired; reconnecting with a new session")
	case zk.StateAuthFailed:
		w.connected = false
		w.e.Health(false, "ZooKeeper rejected the credentials")
	case zk.StateDisconnected, zk.StateConnecting:
		if w.connected {
			w.log.Warn("disconnected from ZooKeeper; reconnecting", "sessionTimeout", w.cfg.sessionTimeout)
			w.e.Health(false, fmt.Sprintf("disconnected from ZooKeeper; reconnecting (the session survives %s)", w.cfg.sessionTimeout))
		}
		w.connected = false
	}
}

func (w *watcher) clearWatches() {
	clear(w.armed)
	w.stats.watches.Store(0)
}

// authenticate adds the digest credentials once; the client re-sends them on reconnects.
func (w *watcher) authenticate() bool {
	if w.cfg.auth == "" {
		w.authed = true
		return true
	}
	if err := w.conn.AddAuth("digest", []byte(w.cfg.auth)); err != nil {
		if isConnErr(err) {
			return false // retried when the session is back
		}
		w.log.Error("ZooKeeper authentication failed", "error", err)
		w.e.Health(false, "ZooKeeper authentication failed: "+err.Error())
		w.scheduleRetry()
		return false
	}
	w.authed = true
	return true
}

// fullSync lists everything under a fresh tree and reports it as one snapshot.
func (w *watcher) fullSync(ctx context.Context) {
	start := time.Now()
	session := w.armSession
	w.t = newTree(w.cfg)
	clear(w.dirty)
	clear(w.pending)
	clear(w.readErr)

	if err := w.refresh(w.t.roots()); err != nil {
		clear(w.t.changed)
		if ctx.Err() == nil {
			w.log.Info("listing ZooKeeper interrupted; retrying when connected", "error", err)
			w.scheduleRetry() // normally the reconnect comes first
		}
		return
	}
	services := make([]catalog.Service, 0, len(w.t.ifaces)+len(w.t.apps))
	unsure := w.unsure()
	instances := 0
	for _, key := range w.allKeys() {
		svc, ok := w.build(key)
		if unsure(key) {
			// A node of it could not be read: what was sent before stands.
			svc, ok = w.e.Sent(key)
		}
		if ok {
			services = append(services, svc)
			instances += len(svc.Instances)
		}
	}
	clear(w.t.changed)
	w.e.Snapshot(services)
	w.scheduleResync()
	w.synced = session
	w.stats.snapshots.Add(1)
	w.e.Health(true, "")
	w.log.Info("listed ZooKeeper", "services", len(services), "instances", instances,
		"interfaces", len(w.t.ifaces), "applications", len(w.t.apps), "mappedInterfaces", len(w.t.mapped),
		"watches", len(w.armed), "session", fmt.Sprintf("%#x", session), "took", time.Since(start).Round(time.Millisecond).String())
}

// resync lists everything again within the session and sends only what differs from what
// the host has. ZooKeeper cannot be asked which watches it holds, and the client can fail to
// re-register them after a reconnect; a resync repairs what such a lost watch missed. Reads
// set only the watches that are not outstanding, so the watch count does not grow.
func (w *watcher) resync(ctx context.Context) {
	start := time.Now()
	w.stats.resyncs.Add(1)
	old := w.t
	w.t = newTree(w.cfg)
	w.t.prev = old
	defer w.dropPrev()
	// Everything is read again; the old tree's queues are kept in case the listing fails.
	oldDirty, oldPending := w.dirty, w.pending
	w.dirty, w.pending = map[string]*node{}, map[string]*node{}
	if err := w.refresh(w.t.roots()); err != nil {
		// The connection went while listing: the new tree is incomplete. Go on with the old
		// one and its queues (its failed reads still protect their services); a new session
		// lists everything anyway, and within this one the next resync tries again soon.
		w.t = old
		w.dirty, w.pending = oldDirty, oldPending
		if ctx.Err() == nil {
			w.log.Info("resync interrupted; trying again", "error", err)
			w.resyncDue = false
			w.resyncTimer.Reset(minResync)
		}
		return
	}
	unsure := w.unsure()
	repaired := 0
	keys := w.allKeys()
	for _, key := range keys {
		if w.emit(key, unsure) {
			repaired++
		}
	}
	clear(w.t.changed)
	w.scheduleResync()
	w.stats.repaired.Add(int64(repaired))
	if repaired > 0 {
		w.log.Warn("resync found changes the watches had not reported; sent them", "services", repaired,
			"took", time.Since(start).Round(time.Millisecond).String())
	} else {
		w.log.Debug("resync found nothing missed", "services", len(keys), "watches", len(w.armed),
			"took", time.Since(start).Round(time.Millisecond).String())
	}
}

// allKeys returns the keys the tree knows and those the host has, sorted and unique.
func (w *watcher) allKeys() []string {
	keys := w.t.keys()
	known := len(keys)
	for _, k := range w.e.SentKeys() {
		if _, ok := slices.BinarySearch(keys[:known], k); !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// unsure tells which services the tree cannot describe because a read of one of their nodes
// failed (it is retried with backoff): an ACL that denies the plugin, for one. Their last
// state the host has must stand, never be deleted for want of data.
func (w *watcher) unsure() func(key string) bool {
	if len(w.pending) == 0 {
		return func(string) bool { return false }
	}
	keys := map[string]bool{}
	var prefixes []string
	mappedOf := func(app, root string) {
		for mk := range w.t.byApp[app] {
			if root == "" || w.t.mapped[mk].root == root {
				keys[mk] = true
			}
		}
	}
	for _, n := range w.pending {
		switch n.kind {
		case kindRoot:
			prefixes = append(prefixes, n.root+":", mappedKeyPrefix+":"+n.root+":")
		case kindMapping:
			prefixes = append(prefixes, mappedKeyPrefix+":"+n.root+":")
		case kindServices:
			prefixes = append(prefixes, appKeyPrefix+":", mappedKeyPrefix+":")
		case kindProviders, kindIfaceDir:
			keys[n.iface.key] = true
			keys[mappedKeyPrefix+":"+n.iface.key] = true
		case kindApp, kindInstance:
			keys[n.app.key] = true
			mappedOf(n.app.name, "")
		case kindMappingEntry:
			keys[n.mapped.key] = true
		case kindMetadata:
			mappedOf(n.meta.app, n.meta.root)
		}
	}
	return func(key string) bool {
		if keys[key] {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(key, p) {
				return true
			}
		}
		return false
	}
}

// dropPrev forgets the tree a resync replaced, so its memory can go.
func (w *watcher) dropPrev() {
	w.t.prev = nil
	for _, is := range w.t.ifaces {
		is.known = nil
	}
}

// incremental reads the nodes that changed and reports the services they belong to.
func (w *watcher) incremental() {
	work := make([]*node, 0, len(w.dirty))
	for p, n := range w.dirty {
		if w.t.nodes[p] == n {
			work = append(work, n)
		}
	}
	clear(w.dirty)
	if err := w.refresh(work); err != nil {
		w.log.Debug("reading ZooKeeper interrupted; retrying when connected", "error", err)
		w.scheduleRetry() // normally the reconnect comes first
	}
	unsure := w.unsure()
	for _, key := range w.t.takeChanged() {
		w.emit(key, unsure)
	}
}

// emit states service key as the tree has it, and reports whether the host was told
// anything. A service whose state is unsure keeps what was sent; it is stated once its nodes
// have been read.
func (w *watcher) emit(key string, unsure func(string) bool) bool {
	if unsure(key) {
		return false
	}
	if svc, ok := w.build(key); ok {
		return w.e.Set(svc)
	}
	return w.e.Remove(key)
}

// refresh reads the given nodes and, level by level, the new nodes their contents reveal.
// Reads run in parallel; their results are applied in this goroutine only after all of a
// level's reads returned, so a watch is always recorded before any event it can cause is
// handled. It returns an error only for connection problems; a node that fails otherwise is
// reported and retried with backoff.
func (w *watcher) refresh(work []*node) error {
	var connErr error
	for len(work) > 0 {
		results := w.readAll(work)
		work = work[:0:0]
		for _, r := range results {
			for _, a := range r.armed {
				w.record(a.path, a.set)
			}
			if r.err != nil {
				w.pending[r.n.path] = r.n
				if isConnErr(r.err) {
					connErr = r.err
					continue
				}
				if w.readErr[r.n.path] != r.err.Error() {
					w.readErr[r.n.path] = r.err.Error()
					w.reject(r.n.path, "cannot read: "+r.err.Error())
					w.log.Warn("cannot read ZooKeeper node; retrying", "path", r.n.path, "error", r.err)
				}
				w.scheduleRetry()
				continue
			}
			delete(w.readErr, r.n.path)
			delete(w.pending, r.n.path)
			if w.t.nodes[r.n.path] != r.n {
				continue // removed while it was being read
			}
			work = append(work, w.t.apply(r, w)...)
		}
		if connErr != nil {
			// The connection is gone: what is left is read when the session is back.
			for _, n := range work {
				w.pending[n.path] = n
			}
			break
		}
	}
	if connErr == nil && len(w.pending) == 0 {
		w.backoff = 0
	}
	return connErr
}

// record notes the watches a read set.
func (w *watcher) record(path string, set wtype) {
	if set == 0 {
		return
	}
	if w.armed[path]&set != 0 {
		w.stats.duplicateWatches.Add(1)
		w.log.Error("watch set twice; this is a bug", "path", path)
	}
	w.armed[path] |= set
	w.stats.watches.Store(int64(len(w.armed)))
}

// readAll runs the reads with bounded concurrency; results keep the order of work. The
// reads only look at armed: it is not written until they all returned.
func (w *watcher) readAll(work []*node) []readResult {
	results := make([]readResult, len(work))
	if len(work) == 1 {
		results[0] = w.read(work[0])
		return results
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range min(readConcurrency, len(work)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(work); i = int(next.Add(1) - 1) {
				results[i] = w.read(work[i])
			}
		})
	}
	wg.Wait()
	return results
}

type readResult struct {
	n        *node
	children []string
	data     []byte
	absent   bool
	armed    []arm                  // watches this read set
	parsed   map[string]parsedChild // new provider nodes, parsed by the worker
	err      error
}

type arm struct {
	path string
	set  wtype
}

// read reads one node, setting the watch it needs unless that watch is still outstanding.
func (w *watcher) read(n *node) readResult {
	w.stats.reads.Add(1)
	r := readResult{n: n}
	var err error
	switch n.kind {
	case kindInstance, kindMappingEntry:
		r.data, r.armed, err = w.dataW(n.path)
	case kindMetadata:
		r.data, _, err = w.conn.Get(n.path)
	case kindProviders:
		r.children, r.armed, err = w.providers(n)
		if err == nil {
			r.parsed = parseNew(n.iface, r.children)
		}
	default:
		var set wtype
		r.children, set, err = w.children(n)
		if set != 0 {
			r.armed = append(r.armed, arm{n.path, set})
		}
	}
	if errors.Is(err, zk.ErrNoNode) {
		r.absent, err = true, nil
	}
	r.err = err
	return r
}

// dataW reads a node's data, with a data watch unless one is outstanding already.
func (w *watcher) dataW(path string) ([]byte, []arm, error) {
	if w.armed[path]&wData != 0 {
		data, _, err := w.conn.Get(path)
		return data, nil, err
	}
	data, _, _, err := w.conn.GetW(path)
	if err != nil {
		return nil, nil, err
	}
	return data, []arm{{path, wData}}, nil
}

// listW lists path's children, with a child watch unless one is outstanding already.
func (w *watcher) listW(path string, have wtype) ([]string, wtype, error) {
	if have&wChild != 0 {
		ch, _, err := w.conn.Children(path)
		return ch, 0, err
	}
	ch, _, _, err := w.conn.ChildrenW(path)
	if err != nil {
		return nil, 0, err
	}
	return ch, wChild, nil
}

// children lists a node's children with a child watch. A missing configured node (a root,
// /services, a mapping directory) gets an exists watch instead, so its creation is noticed.
func (w *watcher) children(n *node) ([]string, wtype, error) {
	var set wtype
	for range 2 {
		ch, s, err := w.listW(n.path, w.armed[n.path]|set)
		set |= s
		if !errors.Is(err, zk.ErrNoNode) {
			return ch, set, err
		}
		if !n.kind.mayBeMissing() || (w.armed[n.path]|set)&(wExist|wData) != 0 {
			return nil, set, err
		}
		exists, _, _, err := w.conn.ExistsW(n.path)
		if err != nil {
			return nil, set, err
		}
		if !exists {
			return nil, set | wExist, zk.ErrNoNode
		}
		set |= wData // created meanwhile: the exists call left a data watch; list again
	}
	return nil, set, zk.ErrNoNode
}

// providers lists an interface's providers. While the providers node is missing, the
// interface node gets a child watch, which fires when providers appears or the interface
// node goes. An exists watch would do too, but it would outlive a deleted interface.
func (w *watcher) providers(n *node) ([]string, []arm, error) {
	var arms []arm
	dir := n.path[:strings.LastIndexByte(n.path, '/')]
	for range 2 {
		ch, set, err := w.listW(n.path, w.armed[n.path])
		if set != 0 {
			arms = append(arms, arm{n.path, set})
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return ch, arms, err
		}
		if w.armed[dir]&wChild != 0 || len(arms) > 0 && arms[len(arms)-1].path == dir {
			return nil, arms, zk.ErrNoNode
		}
		siblings, set, err := w.listW(dir, 0)
		if err != nil {
			return nil, arms, err // the interface node is gone too; the root's watch says so
		}
		arms = append(arms, arm{dir, set})
		if !slices.Contains(siblings, "providers") {
			return nil, arms, zk.ErrNoNode
		}
		// providers was created meanwhile: list it again.
	}
	return nil, arms, zk.ErrNoNode
}

func isConnErr(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrClosing) ||
		errors.Is(err, zk.ErrSessionMoved)
}

// build computes a service's current state; ok is false when it has no usable endpoint.
func (w *watcher) build(key string) (catalog.Service, bool) {
	svc, reason := w.t.service(key, w.cfg.host)
	if reason != "" {
		w.reject(key, reason)
		return catalog.Service{}, false
	}
	if len(svc.Instances) == 0 {
		return catalog.Service{}, false
	}
	return svc, true
}

func (w *watcher) reject(item, reason string) {
	w.e.Reject(catalog.Clip(item, 256), catalog.Clip(reason, 512))
}

func (w *watcher) scheduleRetry() {
	w.retry.Reset(w.nextBackoff())
}

// markPending queues the nodes whose reads failed for another attempt.
func (w *watcher) markPending() {
	for p, n := range w.pending {
		w.dirty[p] = n
	}
	clear(w.pending)
}

func (w *watcher) nextBackoff() time.Duration {
	w.backoff = min(max(2*w.backoff, minBackoff), maxBackoff)
	return w.backoff/2 + rand.N(w.backoff/2+1)
}
