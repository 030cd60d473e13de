package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Writer takes the desired state of the controllers (the Reconciler implements it): each
// hands over whole groups of objects — everything for one mesh host, every EnvoyFilter — and
// the writer works out what to create, change and delete.
type Writer interface {
	// SetGroup makes objs the complete desired state of group (nil: nothing): each object
	// is wanted as given, and the objects the group held before and does not hold now are
	// orphans, deleted once deletes are allowed. It returns one error per object it could
	// not take, each an *ObjectError.
	SetGroup(group string, objs []*unstructured.Unstructured) []error
	// AllowDeletes is called once the sources have delivered complete snapshots and the
	// desired state built from them has been handed over: only then can an owned object that
	// nobody wants be told apart from one whose source has not reported yet. Where sources
	// sync one by one (Config.HoldDelete), it is called again each time held deletes may
	// have become safe.
	AllowDeletes()
}

// ObjectError is a desired object the writer did not take.
type ObjectError struct {
	Kind, Namespace, Name string
	Err                   error
}

func (e *ObjectError) Error() string {
	return fmt.Sprintf("%s %s/%s: %v", e.Kind, e.Namespace, e.Name, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }

// Kind is a namespaced resource the reconciler manages.
type Kind struct {
	GVK      schema.GroupVersionKind
	Resource string // plural resource name, e.g. "serviceentries"
}

// ServiceEntryKind is Istio's networking.istio.io/v1 ServiceEntry.
func ServiceEntryKind() Kind {
	return Kind{GVK: istio.ServiceEntryKind, Resource: istio.ServiceEntryResource.Resource}
}

// WorkloadEntryKind is Istio's networking.istio.io/v1 WorkloadEntry.
func WorkloadEntryKind() Kind {
	return Kind{GVK: istio.WorkloadEntryKind, Resource: istio.WorkloadEntryResource.Resource}
}

// EnvoyFilterKind is Istio's networking.istio.io/v1alpha3 EnvoyFilter.
func EnvoyFilterKind() Kind {
	return Kind{GVK: istio.EnvoyFilterKind, Resource: istio.EnvoyFilterResource.Resource}
}

// Event types and reasons passed to Config.Recorder.
const (
	EventTypeWarning     = "Warning"
	ReasonForeignObject  = "NameTakenByForeignObject"
	ReasonObjectTooLarge = "ObjectTooLarge"
	ReasonWriteFailed    = "WriteFailed"
)

// DefaultWorkers is the number of concurrent writers when none is configured: with fewer, an
// API server on a busy machine is kept waiting on round trips rather than on its own work.
const DefaultWorkers = 16

// Config configures a Reconciler. Client, Kinds and Registerer are required.
type Config struct {
	Client dynamic.Interface
	Kinds  []Kind
	// Namespace limits the reconciler to one namespace; "" means all namespaces.
	Namespace string
	// FieldManager is the server-side apply field manager; default "meltemi".
	FieldManager string
	// OwnerLabels, when set, narrow ownership: they are added to every written object, and an
	// object counts as owned only if it carries them as well as managed-by=meltemi. Use it to
	// run several independent Meltemi instances in one cluster.
	OwnerLabels map[string]string
	// Workers is the number of concurrent reconcile workers; default DefaultWorkers.
	Workers int
	// QPS and Burst bound the rate of writes (applies and deletes) with a token bucket;
	// defaults 200 and 400. Reads go through informers and are not counted.
	QPS   float32
	Burst int
	// ResyncPeriod is how often every desired and owned object is re-checked against the cache
	// (no API call for objects in sync); default 10 minutes, negative disables.
	ResyncPeriod time.Duration
	// MaxObjectBytes is the largest JSON encoding written; default DefaultMaxObjectBytes.
	MaxObjectBytes int
	// MaxRetryDelay caps the exponential retry backoff; default 5 minutes.
	MaxRetryDelay time.Duration
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
	// Recorder, when set, is told about refusals (foreign name conflicts, oversized objects)
	// and about the first of a run of failed writes for an object.
	// Its signature matches k8s.io/client-go/tools/record.EventRecorder.Event.
	Recorder func(obj runtime.Object, eventType, reason, message string)
	// HoldDelete, when set, keeps an owned orphan even after AllowDeletes while it reports
	// true for the object's labels and annotations (e.g. while the source the object came
	// from has not synced). Call AllowDeletes when its answers may have changed.
	HoldDelete func(labels, annotations map[string]string) bool
	// OnSynced, when set, is called from a worker each time a key has been brought in line
	// with its desired state (or absence of one): wrote is true when that took an API write
	// (apply or delete), false when nothing was to be written. Failed attempts are retried and
	// reported only once they succeed. It must not block; the source of a change uses it to
	// measure how long the change took to reach the cluster.
	OnSynced func(gvk schema.GroupVersionKind, namespace, name string, wrote bool)
}

// Stats are cumulative counters since New, plus two current values.
type Stats struct {
	Applies          int64 // successful server-side applies (creates and updates)
	Creates          int64 // applies of objects absent from the cache
	Deletes          int64 // successful deletes of owned orphans
	Noops            int64 // reconciliations that needed no write
	Errors           int64 // failed writes and refused (oversized) objects
	ForeignConflicts int64 // refusals because a foreign object holds a desired name
	StaleRetries     int64 // writes rejected by a precondition (409) and retried
	Reads            int64 // objects read whole because the cache could not tell drift from server defaults
	PendingDeletes   int   // owned orphans kept until AllowDeletes
	QueueDepth       int   // keys queued or waiting out a retry backoff
}

// objKey identifies an object: kind index into Config.Kinds, namespace and name.
type objKey struct {
	kind      int
	namespace string
	name      string
}

type kindState struct {
	Kind
	gvr      schema.GroupVersionResource
	label    string // metric label: the Kind
	informer cache.SharedIndexInformer
	client   dynamic.NamespaceableResourceInterface
}

// desiredState is what the host asked for under one key.
type desiredState struct {
	d       *desiredObject
	refused error // non-nil: Set was refused (too large); the cluster object is left as it is
}

// writeRecord remembers the reconciler's last write to a key until the informer has shown it,
// so that a cache lagging behind our own writes neither causes a duplicate write nor hides a
// needed one.
type writeRecord struct {
	deleted         bool
	hash            string // content hash applied (when !deleted)
	resourceVersion string // returned by the apply (when !deleted)
	uid             types.UID
	at              time.Time
}

// appliedRecord is the content hash of the reconciler's last apply to a key and the
// resourceVersion the server returned for it. An object still at that resourceVersion holds
// everything the server keeps of that content, even where the server normalised it so that it
// no longer compares equal to the desired object; it is not applied again.
type appliedRecord struct {
	hash            string
	resourceVersion string
}

// observeTimeout bounds how long a write record is trusted over the informer cache.
const observeTimeout = 30 * time.Second

// Reconciler keeps owned objects in the cluster equal to the desired set. Create it with New
// and start it with Run.
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	kinds   []*kindState
	byGVK   map[schema.GroupVersionKind]int
	queue   workqueue.TypedInterface[objKey]
	backoff workqueue.TypedRateLimiter[objKey] // per-key retry delays
	qm      *queueMetrics
	limiter *rate.Limiter
	m       *metrics

	mu        sync.RWMutex
	desired   map[objKey]*desiredState
	groups    map[string][]objKey // group -> the keys it was last given
	member    map[objKey]string   // key -> the group that last gave it
	lastWrite map[objKey]*writeRecord
	applied   map[objKey]appliedRecord // last successful apply per key, kept after it is observed
	pending   map[objKey]struct{}      // owned orphans kept while deletes are not allowed
	conflicts map[objKey]types.UID     // foreign object last reported per key (one event per object)
	waiting   map[objKey]*waitingKey   // keys waiting out a retry backoff

	allowDeletes atomic.Bool
	serverDown   atomic.Bool // a write failed for want of an answer; probing until one comes
	started      atomic.Bool
	synced       chan struct{}
	progress     chan struct{} // signalled (without blocking) when a worker finishes a key

	applies, creates, deletes, noops, errs, foreign, stale, reads atomic.Int64
}

// New validates cfg, fills in defaults and sets up informers and the work queue. Nothing talks
// to the API server until Run.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Client == nil {
		return nil, errors.New("kube reconciler: Config.Client is required")
	}
	if len(cfg.Kinds) == 0 {
		return nil, errors.New("kube reconciler: Config.Kinds is empty")
	}
	if cfg.Registerer == nil {
		return nil, errors.New("kube reconciler: Config.Registerer is required")
	}
	if cfg.FieldManager == "" {
		cfg.FieldManager = "meltemi"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.QPS <= 0 {
		cfg.QPS = 200
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 400
	}
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = 10 * time.Minute
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = DefaultMaxObjectBytes
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for k, v := range cfg.OwnerLabels {
		if k == v1alpha1.LabelManagedBy || v == "" {
			return nil, fmt.Errorf("kube reconciler: invalid owner label %q=%q", k, v)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("kube reconciler: registering metrics: %w", err)
	}
	r := &Reconciler{
		cfg:       cfg,
		log:       cfg.Logger,
		byGVK:     map[schema.GroupVersionKind]int{},
		limiter:   rate.NewLimiter(rate.Limit(cfg.QPS), cfg.Burst),
		m:         m,
		desired:   map[objKey]*desiredState{},
		groups:    map[string][]objKey{},
		member:    map[objKey]string{},
		lastWrite: map[objKey]*writeRecord{},
		applied:   map[objKey]appliedRecord{},
		pending:   map[objKey]struct{}{},
		conflicts: map[objKey]types.UID{},
		waiting:   map[objKey]*waitingKey{},
		synced:    make(chan struct{}),
		progress:  make(chan struct{}, 1),
	}
	r.qm = &queueMetrics{depth: m.queueDepth}
	r.backoff = workqueue.NewTypedItemExponentialFailureRateLimiter[objKey](10*time.Millisecond, cfg.MaxRetryDelay)
	r.queue = workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[objKey]{Name: "meltemi-sync", MetricsProvider: r.qm})
	for i, k := range cfg.Kinds {
		if k.Resource == "" || k.GVK.Kind == "" || k.GVK.Version == "" {
			return nil, fmt.Errorf("kube reconciler: incomplete kind %+v", k)
		}
		if _, dup := r.byGVK[k.GVK]; dup {
			return nil, fmt.Errorf("kube reconciler: kind %s listed twice", k.GVK)
		}
		r.byGVK[k.GVK] = i
		gvr := k.GVK.GroupVersion().WithResource(k.Resource)
		// One unfiltered informer per kind: owned objects are kept whole, foreign ones are cut
		// down to their identity by the transform, so names taken by foreign objects are known
		// without extra GETs at the memory cost of metadata only.
		inf := dynamicinformer.NewFilteredDynamicInformer(cfg.Client, gvr, cfg.Namespace, 0, cache.Indexers{}, nil).Informer()
		if err := inf.SetTransform(r.transform); err != nil {
			return nil, err
		}
		label := k.GVK.Kind
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			switch {
			case errors.Is(err, io.EOF), apierrors.IsResourceExpired(err), apierrors.IsGone(err):
				r.log.Debug("watch closed, relisting", "kind", label, "err", err)
			default:
				r.log.Warn("list/watch failed, retrying", "kind", label, "resource", gvr.String(), "err", err)
			}
		}); err != nil {
			return nil, err
		}
		idx := i
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { r.onEvent(idx, nil, obj, false) },
			UpdateFunc: func(old, obj any) { r.onEvent(idx, old, obj, false) },
			DeleteFunc: func(obj any) { r.onEvent(idx, nil, obj, true) },
		}); err != nil {
			return nil, err
		}
		r.kinds = append(r.kinds, &kindState{Kind: k, gvr: gvr, label: k.GVK.Kind, informer: inf, client: cfg.Client.Resource(gvr)})
	}
	return r, nil
}

// Run starts the informers, waits for their caches to sync, then runs the workers until ctx is
// done. It returns nil after a clean shutdown. A Reconciler runs once.
func (r *Reconciler) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("kube reconciler: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer r.queue.ShutDown()

	for _, ks := range r.kinds {
		wg.Go(func() { ks.informer.RunWithContext(ctx) })
	}
	start := time.Now()
	if !r.waitForCaches(ctx) {
		return nil // ctx done before the caches synced
	}
	r.log.Info("kube reconciler caches synced", "kinds", len(r.kinds), "namespace", r.cfg.Namespace,
		"took", time.Since(start).Round(time.Millisecond))
	close(r.synced)

	for range r.cfg.Workers {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	wg.Go(func() { r.probe(ctx) })
	if r.cfg.ResyncPeriod > 0 {
		wg.Go(func() {
			t := time.NewTicker(r.cfg.ResyncPeriod)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					r.resync()
				}
			}
		})
	}
	<-ctx.Done()
	return nil
}

// waitForCaches waits until every informer has synced, logging the kinds still listing every
// 30 seconds (a missing CRD or RBAC rule shows up here). It returns false if ctx ends first.
func (r *Reconciler) waitForCaches(ctx context.Context) bool {
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	start, lastLog := time.Now(), time.Now()
	for {
		var waiting []string
		for _, ks := range r.kinds {
			if !ks.informer.HasSynced() {
				waiting = append(waiting, ks.gvr.String())
			}
		}
		if len(waiting) == 0 {
			return true
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			r.log.Warn("kube reconciler still waiting for informer caches", "resources", waiting,
				"waited", time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return false
		case <-poll.C:
		}
	}
}

// Set makes obj the desired state for its (kind, namespace, name), replacing any previous one.
// The object is normalised (see the package doc); the caller keeps ownership of obj. Set
// returns an error, and changes nothing, for an unknown kind or a missing name or namespace.
// An object over the size limit is refused with an error wrapping ErrTooLarge: nothing is
// written for that key and an existing cluster object is left as it is (not deleted) until a
// later Set or SetGroup.
func (r *Reconciler) Set(obj *unstructured.Unstructured) error {
	k, err := r.key(obj.GroupVersionKind(), obj.GetNamespace(), obj.GetName())
	if err != nil {
		return err
	}
	d, err := normalize(obj, r.cfg.OwnerLabels, r.cfg.MaxObjectBytes)
	if errors.Is(err, ErrTooLarge) {
		ks := r.kinds[k.kind]
		r.m.refused.WithLabelValues(ks.label, "too_large").Inc()
		r.m.errors.WithLabelValues(ks.label).Inc()
		r.errs.Add(1)
		r.log.Error("refusing oversized object", "kind", ks.label, "namespace", k.namespace, "name", k.name,
			"bytes", d.size, "limit", r.cfg.MaxObjectBytes)
		r.record(d.ref(), EventTypeWarning, ReasonObjectTooLarge, err.Error())
		r.mu.Lock()
		r.desired[k] = &desiredState{refused: err}
		r.mu.Unlock()
		r.enqueue(k)
		return err
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.desired[k] = &desiredState{d: d}
	r.mu.Unlock()
	r.enqueue(k)
	return nil
}

// unset removes the desired state of an object. The owned cluster object becomes an orphan,
// deleted once deletes are allowed.
func (r *Reconciler) unset(gvk schema.GroupVersionKind, namespace, name string) {
	k, err := r.key(gvk, namespace, name)
	if err != nil {
		r.log.Error("kube reconciler: unset ignored", "err", err)
		return
	}
	r.mu.Lock()
	_, had := r.desired[k]
	delete(r.desired, k)
	r.mu.Unlock()
	if had {
		r.enqueue(k)
	}
}

// SetGroup implements Writer.
func (r *Reconciler) SetGroup(group string, objs []*unstructured.Unstructured) []error {
	var errs []error
	keys := make([]objKey, 0, len(objs))
	for _, obj := range objs {
		err := r.Set(obj)
		if k, kerr := r.key(obj.GroupVersionKind(), obj.GetNamespace(), obj.GetName()); kerr == nil {
			keys = append(keys, k) // a refused object (too large) still belongs to the group
		}
		if err != nil {
			errs = append(errs, &ObjectError{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), Err: err})
		}
	}
	r.mu.Lock()
	prev := r.groups[group]
	if len(keys) == 0 {
		delete(r.groups, group)
	} else {
		r.groups[group] = keys
	}
	for _, k := range keys {
		r.member[k] = group
	}
	// What the group gave before and not now is no longer wanted, unless another group has
	// taken it since.
	var gone []objKey
	if len(prev) > 0 {
		now := make(map[objKey]struct{}, len(keys))
		for _, k := range keys {
			now[k] = struct{}{}
		}
		for _, k := range prev {
			if _, ok := now[k]; !ok && r.member[k] == group {
				delete(r.member, k)
				gone = append(gone, k)
			}
		}
	}
	r.mu.Unlock()
	for _, k := range gone {
		r.unset(r.kinds[k.kind].GVK, k.namespace, k.name)
	}
	return errs
}

// AllowDeletes enables deleting owned objects that are not desired, except those
// Config.HoldDelete holds; every call looks at the orphans kept so far again. Call it once the
// sources have delivered their first complete snapshots; before that, orphans are kept and
// counted (meltemi_sync_pending_deletes).
func (r *Reconciler) AllowDeletes() {
	first := r.allowDeletes.CompareAndSwap(false, true)
	r.mu.RLock()
	keys := make([]objKey, 0, len(r.pending))
	for k := range r.pending {
		keys = append(keys, k)
	}
	r.mu.RUnlock()
	if first {
		r.log.Info("kube reconciler deletes allowed", "pendingDeletes", len(keys))
	}
	for _, k := range keys {
		r.enqueue(k)
	}
	// Orphans whose first reconcile has not run yet are in the queue already; they will see
	// the flag.
}

// WaitIdle blocks until the caches have synced, no key is queued and no reconcile is in flight,
// or ctx is done. Keys waiting out a retry backoff (e.g. names held by foreign objects) do not
// count, and informer events for writes just made may still arrive afterwards (they find the
// objects in sync).
func (r *Reconciler) WaitIdle(ctx context.Context) error {
	select {
	case <-r.synced:
	case <-ctx.Done():
		return ctx.Err()
	}
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		if r.qm.outstanding.Load() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WaitBacklog blocks while more keys are queued than the workers can take at once, or until
// ctx is done; it returns at once while the workers are not running (before Run's caches
// synced, or on a replica that does not lead). A source that calls it before handing over its
// next changes is paced by the API server: changes that arrive meanwhile coalesce at the
// source and are turned into objects once per write, not once per change, so an overloaded
// API server does not also cost the host (and the machine it shares) a conversion for every
// change that is superseded before it is written. Keys waiting out a retry backoff do not
// count: a failing server does not stop the source from taking changes.
func (r *Reconciler) WaitBacklog(ctx context.Context) {
	if !r.Synced() {
		return
	}
	// Woken by every finished key rather than polling: under overload the workers finish a
	// key every few milliseconds, and a poll that often costs the host a wake-up each time.
	// The timer covers keys that leave the queue without being processed (a shutdown).
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for r.queue.Len() > r.cfg.Workers {
		select {
		case <-ctx.Done():
			return
		case <-r.progress:
		case <-t.C:
		}
	}
}

// HandOverLimit is how many groups a source should hand over at once: twice the workers, so
// that the workers always have the next writes queued, while what is handed over is
// converted just before it is written; 0 (no limit) while the workers are not running.
func (r *Reconciler) HandOverLimit() int {
	if !r.Synced() {
		return 0
	}
	return 2 * r.cfg.Workers
}

// Cached returns the cluster's copy of an owned object as the informer cache holds it, or nil
// (also for a foreign object). The caller must not modify it.
func (r *Reconciler) Cached(gvk schema.GroupVersionKind, namespace, name string) *unstructured.Unstructured {
	k, err := r.key(gvk, namespace, name)
	if err != nil {
		return nil
	}
	if u := r.cached(k); u != nil && r.owned(u) {
		return u
	}
	return nil
}

// NameConflict is a desired object whose name is held by an object Meltemi does not own.
type NameConflict struct {
	Kind, Namespace, Name string
	// Registries are those the desired object names (see v1alpha1.Registries).
	Registries []string
}

// NameConflicts returns the desired objects not written because a foreign object holds their
// name, sorted.
func (r *Reconciler) NameConflicts() []NameConflict {
	r.mu.RLock()
	out := make([]NameConflict, 0, len(r.conflicts))
	for k := range r.conflicts {
		c := NameConflict{Kind: r.kinds[k.kind].label, Namespace: k.namespace, Name: k.name}
		if want := r.desired[k]; want != nil && want.d != nil {
			c.Registries = v1alpha1.Registries(want.d.labels, want.d.annotations)
		}
		out = append(out, c)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b NameConflict) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Synced reports whether the informer caches have synced (Run got past its start).
func (r *Reconciler) Synced() bool {
	select {
	case <-r.synced:
		return true
	default:
		return false
	}
}

// Stats returns the counters.
func (r *Reconciler) Stats() Stats {
	r.mu.RLock()
	pending, waiting := len(r.pending), len(r.waiting)
	r.mu.RUnlock()
	return Stats{
		Applies:          r.applies.Load(),
		Creates:          r.creates.Load(),
		Deletes:          r.deletes.Load(),
		Noops:            r.noops.Load(),
		Errors:           r.errs.Load(),
		ForeignConflicts: r.foreign.Load(),
		StaleRetries:     r.stale.Load(),
		Reads:            r.reads.Load(),
		PendingDeletes:   pending,
		QueueDepth:       r.queue.Len() + waiting,
	}
}

func (r *Reconciler) key(gvk schema.GroupVersionKind, namespace, name string) (objKey, error) {
	i, ok := r.byGVK[gvk]
	if !ok {
		return objKey{}, fmt.Errorf("kube reconciler: kind %s is not configured", gvk)
	}
	if name == "" {
		return objKey{}, fmt.Errorf("kube reconciler: %s without a name", gvk.Kind)
	}
	if namespace == "" {
		return objKey{}, fmt.Errorf("kube reconciler: %s %q without a namespace", gvk.Kind, name)
	}
	if r.cfg.Namespace != "" && namespace != r.cfg.Namespace {
		return objKey{}, fmt.Errorf("kube reconciler: %s %s/%s is outside namespace %q", gvk.Kind, namespace, name, r.cfg.Namespace)
	}
	return objKey{kind: i, namespace: namespace, name: name}, nil
}

func (r *Reconciler) record(obj runtime.Object, eventType, reason, message string) {
	if r.cfg.Recorder != nil && obj != nil {
		r.cfg.Recorder(obj, eventType, reason, message)
	}
}

// owned reports whether a cluster object belongs to this reconciler.
func (r *Reconciler) owned(u *unstructured.Unstructured) bool {
	labels := u.GetLabels()
	if labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
		return false
	}
	for k, v := range r.cfg.OwnerLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// transform runs on every object before it enters an informer cache. Owned objects keep their
// metadata (without managedFields) and the digest of their content (compactLive); foreign
// objects keep just what the ownership decision needs.
func (r *Reconciler) transform(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	if r.owned(u) {
		return compactLive(u), nil
	}
	return Identity(u), nil
}

// Identity is an object cut down to its identity and labels: what an informer needs to keep of
// an object it watches only to know who holds a name.
func Identity(u *unstructured.Unstructured) *unstructured.Unstructured {
	s := &unstructured.Unstructured{Object: map[string]any{}}
	s.SetAPIVersion(u.GetAPIVersion())
	s.SetKind(u.GetKind())
	s.SetNamespace(u.GetNamespace())
	s.SetName(u.GetName())
	s.SetUID(u.GetUID())
	s.SetResourceVersion(u.GetResourceVersion())
	s.SetLabels(u.GetLabels())
	s.SetDeletionTimestamp(u.GetDeletionTimestamp())
	return s
}

// onEvent handles informer notifications: it retires write records the cache has caught up
// with and queues keys that may need work (owned objects, and any object under a desired name).
func (r *Reconciler) onEvent(kind int, oldObj, obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k := objKey{kind: kind, namespace: u.GetNamespace(), name: u.GetName()}
	r.mu.Lock()
	if w := r.lastWrite[k]; w != nil && observes(w, u, deleted) {
		delete(r.lastWrite, k)
	}
	_, desired := r.desired[k]
	_, pending := r.pending[k]
	r.mu.Unlock()
	wasOwned := false
	if o, ok := oldObj.(*unstructured.Unstructured); ok {
		wasOwned = r.owned(o)
	}
	if desired || pending || wasOwned || r.owned(u) {
		r.enqueue(k)
	}
}

// resync queues every desired key and every owned object in the caches.
func (r *Reconciler) resync() {
	now := time.Now()
	r.mu.Lock()
	keys := make([]objKey, 0, len(r.desired))
	for k := range r.desired {
		keys = append(keys, k)
	}
	for k, w := range r.lastWrite {
		if now.Sub(w.at) > observeTimeout {
			delete(r.lastWrite, k)
		}
	}
	r.mu.Unlock()
	for i, ks := range r.kinds {
		for _, obj := range ks.informer.GetStore().List() {
			if u, ok := obj.(*unstructured.Unstructured); ok && r.owned(u) {
				keys = append(keys, objKey{kind: i, namespace: u.GetNamespace(), name: u.GetName()})
			}
		}
	}
	for _, k := range keys {
		r.enqueue(k)
	}
}
