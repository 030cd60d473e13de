// Package controller runs the traffic translator (package traffic) against the cluster: it
// watches MetaRouters, ApplicationProtocols, DestinationRules, ServiceEntries, Kubernetes
// Services, VirtualServices, DubboAuthorizationPolicies, RedisServices, RedisDestinations, the
// Secrets those name, Istio's mesh config and Meltemi's own EnvoyFilters; after a quiet period
// it translates one snapshot of them, hands the route configurations to the RDS server
// (sync/xds) and the EnvoyFilters to the owned-object writer (sync/kube), and reports each
// rule's outcome in its status, in Events and in metrics. An invalid edit of a MetaRouter keeps
// the last valid version in service; an EnvoyFilter the translation holds (bad input such as an
// unreadable Redis password) is handed to the writer as it is in the cluster.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/internal/coalesce"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
	"github.com/meltemi-mesh/meltemi/traffic"
)

// RouteSink receives the complete set of route configurations after each translation; the
// xDS server (sync/xds) implements it.
type RouteSink interface {
	// UpdateSince hands over routes reflecting input changes that began at origin.
	UpdateSince(origin time.Time, routes map[string]*routev3.RouteConfiguration)
}

// Config configures a Controller. Client, Writer and Routes are required.
type Config struct {
	Client  dynamic.Interface
	Writer  synckube.Writer
	Routes  RouteSink
	Options traffic.Options
	// WatchNamespace limits the objects read to one namespace; "" reads all (MetaRouters are
	// mesh wide, whatever their namespace).
	WatchNamespace string
	// MeshConfig is Istio's mesh config ConfigMap (key "mesh"), the source of the proxies'
	// access log and tracing settings; a zero name means Istio's defaults.
	MeshConfig types.NamespacedName
	// Debounce is the quiet time after the last change before translating; MaxDelay bounds how
	// long a stream of changes can postpone it. Defaults 100ms and 1s.
	Debounce, MaxDelay time.Duration
	// Recorder, when set, records events on MetaRouters; the signature of
	// k8s.io/client-go/tools/record.EventRecorder.Event.
	Recorder func(obj runtime.Object, eventType, reason, message string)
	// Leading reports whether this replica writes MetaRouter statuses and events (with leader
	// election, only the leader does; every replica translates and serves routes). Nil: always.
	Leading func() bool
	// ReadSecrets lets the controller read the Secrets RedisServices and RedisDestinations name
	// for passwords (it watches Secrets, so it needs the RBAC to); without, such auth is
	// reported and the port left plain TCP.
	ReadSecrets bool
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
}

// Controller is created with New and started with Run.
type Controller struct {
	cfg       Config
	log       *slog.Logger
	m         *metrics
	informers []cache.SharedIndexInformer
	// meshInformer watches the one mesh config ConfigMap (nil without one).
	meshInformer cache.SharedIndexInformer
	status       *statusWriter
	// redisStatus writes the statuses of RedisServices and RedisDestinations, by kind.
	redisStatus map[string]*statusWriter
	// envoyFilters caches the EnvoyFilters where Meltemi's go, its own included.
	envoyFilters cache.SharedIndexInformer
	// secretRefs are the Secrets the Redis objects of the last translation name.
	secretRefs atomic.Pointer[map[types.NamespacedName]bool]
	// optional are inputs whose CRDs may be missing (Helm does not upgrade CRDs): without
	// them the other rules are still translated.
	optional []optionalInput

	// queue coalesces changes of the inputs: the translation reads them all, so the one key
	// only carries the time of the earliest change.
	queue *coalesce.Queue[struct{}]

	mu       sync.Mutex
	accepted map[types.NamespacedName]*mpv1.MetaRouter // last valid version of each MetaRouter
	problems map[string]bool                           // problems of the last translation
	// reannounce makes the next translation report every problem as new (a new leader records
	// the events a standby did not).
	reannounce atomic.Bool
	synced     bool // first translation handed over
	lastMesh   *traffic.MeshConfig
}

// New validates cfg and sets up the informers; nothing talks to the API server until Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil || cfg.Writer == nil || cfg.Routes == nil {
		return nil, errors.New("traffic controller: Client, Writer and Routes are required")
	}
	if err := cfg.Options.Validate(); err != nil {
		return nil, fmt.Errorf("traffic controller: %w", err)
	}
	cfg.Options = cfg.Options.WithDefaults()
	if cfg.Debounce <= 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("traffic controller: %w", err)
	}
	c := &Controller{
		cfg: cfg, log: cfg.Logger, m: m,
		queue:    coalesce.New[struct{}](cfg.Debounce, cfg.MaxDelay),
		accepted: map[types.NamespacedName]*mpv1.MetaRouter{},

		problems: map[string]bool{},
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(cfg.Client, 0, cfg.WatchNamespace, nil)
	byResource := map[schema.GroupVersionResource]cache.SharedIndexInformer{}
	for _, gvr := range []schema.GroupVersionResource{mpv1.MetaRouterResource, mpv1.ApplicationProtocolResource, istio.DestinationRuleResource,
		istio.ServiceEntryResource, istio.VirtualServiceResource, dubbov1.DubboAuthorizationPolicyResource,
		redisv1.RedisServiceResource, redisv1.RedisDestinationResource, serviceResource, secretResource} {
		if gvr == secretResource && !cfg.ReadSecrets {
			continue
		}
		inf := factory.ForResource(gvr).Informer()
		byResource[gvr] = inf
		if err := inf.SetTransform(slim); err != nil {
			return nil, err
		}
		handler := cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.markDirty() },
			UpdateFunc: func(old, obj any) { c.onUpdate(old, obj) },
			DeleteFunc: func(any) { c.markDirty() },
		}
		if gvr == secretResource {
			// Secrets change often (tokens, certificates); only those Redis objects name matter.
			handler = cache.ResourceEventHandlerFuncs{
				AddFunc:    c.onSecret,
				UpdateFunc: func(_, obj any) { c.onSecret(obj) },
				DeleteFunc: c.onSecret,
			}
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, err
		}
		c.informers = append(c.informers, inf)
		if gvr.Group == redisv1.Group {
			c.optional = append(c.optional, optionalInput{gvr, inf})
		}
	}
	// EnvoyFilters Meltemi does not own, where its own go: one patching the same listener
	// (a still running Aeraki) is reported. Changes of Meltemi's own do not retranslate.
	efInf := factoryFor(cfg.Client, cfg.Options.WriterNamespace()).ForResource(istio.EnvoyFilterResource).Informer()
	if err := efInf.SetTransform(slim); err != nil {
		return nil, err
	}
	foreignChange := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok && traffic.Owned(u) {
			return
		}
		c.markDirty()
	}
	if _, err := efInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: foreignChange, UpdateFunc: func(_, obj any) { foreignChange(obj) }, DeleteFunc: foreignChange,
	}); err != nil {
		return nil, err
	}
	c.informers = append(c.informers, efInf)
	c.envoyFilters = efInf
	if cfg.MeshConfig.Name != "" {
		name := cfg.MeshConfig.Name
		inf := dynamicinformer.NewFilteredDynamicInformer(cfg.Client, configMapResource, cfg.MeshConfig.Namespace, 0, cache.Indexers{},
			func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + name }).Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.markDirty() },
			UpdateFunc: func(any, any) { c.markDirty() },
			DeleteFunc: func(any) { c.markDirty() },
		}); err != nil {
			return nil, err
		}
		c.meshInformer = inf
	}
	leading := cfg.Leading
	if leading == nil {
		leading = func() bool { return true }
	}
	c.status = newStatusWriter(cfg.Client, mpv1.MetaRouterResource, mpv1.MetaRouterKind.Kind, byResource[mpv1.MetaRouterResource], leading, m, cfg.Logger)
	c.redisStatus = map[string]*statusWriter{
		redisv1.RedisServiceKind.Kind: newStatusWriter(cfg.Client, redisv1.RedisServiceResource, redisv1.RedisServiceKind.Kind,
			byResource[redisv1.RedisServiceResource], leading, m, cfg.Logger),
		redisv1.RedisDestinationKind.Kind: newStatusWriter(cfg.Client, redisv1.RedisDestinationResource, redisv1.RedisDestinationKind.Kind,
			byResource[redisv1.RedisDestinationResource], leading, m, cfg.Logger),
	}
	return c, nil
}

// slim drops what the translation never reads before objects enter the caches: managed fields,
// and the endpoints of ServiceEntries (Meltemi's can carry thousands).
func slim(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	u.SetManagedFields(nil)
	switch u.GetKind() {
	case istio.ServiceEntryKind.Kind:
		unstructured.RemoveNestedField(u.Object, "spec", "endpoints")
	case "Secret":
		// Only passwords of Opaque and basic-auth Secrets are read; the rest (service account
		// tokens, certificates, Helm releases) is never kept.
		if t, _, _ := unstructured.NestedString(u.Object, "type"); t != "" && t != "Opaque" && t != "kubernetes.io/basic-auth" {
			unstructured.RemoveNestedField(u.Object, "data")
		}
		// kubectl's last-applied annotation would keep a second copy of the data.
		u.SetAnnotations(nil)
	}
	return u, nil
}

// onUpdate ignores updates that change neither spec nor labels (status writes, resyncs) —
// except the addresses istiod allocates into a ServiceEntry's status, which name its listener:
// the translation reads nothing else that can change.
func (c *Controller) onUpdate(old, obj any) {
	o, ok1 := old.(*unstructured.Unstructured)
	n, ok2 := obj.(*unstructured.Unstructured)
	if ok1 && ok2 && n.GetGeneration() != 0 && o.GetGeneration() == n.GetGeneration() && maps.Equal(o.GetLabels(), n.GetLabels()) &&
		(n.GetKind() != istio.ServiceEntryKind.Kind || reflect.DeepEqual(allocatedAddresses(o), allocatedAddresses(n))) {
		return
	}
	c.markDirty()
}

func allocatedAddresses(u *unstructured.Unstructured) any {
	v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "addresses")
	return v
}

func (c *Controller) markDirty() { c.queue.Add(struct{}{}) }

// onSecret retranslates when a Secret the last translation's Redis objects name changes.
func (c *Controller) onSecret(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		c.markDirty()
		return
	}
	if refs := c.secretRefs.Load(); refs != nil && (*refs)[types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}] {
		c.markDirty()
	}
}

// Resync translates again soon, e.g. when this replica has become the leader and should bring
// statuses up to date and record the events of standing problems.
func (c *Controller) Resync() {
	c.reannounce.Store(true)
	c.markDirty()
}

// Synced reports whether the first translation of complete inputs has been handed over.
func (c *Controller) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

type optionalInput struct {
	gvr      schema.GroupVersionResource
	informer cache.SharedIndexInformer
}

// dropMissingOptional leaves out the informers of optional inputs whose resource the API
// server does not serve, saying so; an informer of a missing CRD would never sync and hold up
// every translation.
func (c *Controller) dropMissingOptional(ctx context.Context) {
	for _, o := range c.optional {
		_, err := c.cfg.Client.Resource(o.gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if !apierrors.IsNotFound(err) {
			continue
		}
		c.log.Warn("CRD not installed: these rules are not read until it is and Meltemi restarts (helm upgrade does not install new CRDs: kubectl apply -f the chart's crds/)",
			"resource", o.gvr.GroupResource().String())
		c.informers = slices.DeleteFunc(c.informers, func(inf cache.SharedIndexInformer) bool { return inf == o.informer })
	}
}

// Run starts the informers and translates after every burst of changes until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.dropMissingOptional(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var hasSynced []cache.InformerSynced
	for _, inf := range c.allInformers() {
		wg.Go(func() { inf.RunWithContext(ctx) })
		hasSynced = append(hasSynced, inf.HasSynced)
	}
	wg.Go(func() { c.status.run(ctx) })
	for _, w := range c.redisStatus {
		wg.Go(func() { w.run(ctx) })
	}
	start := time.Now()
	waitCtx, stopWait := context.WithCancel(ctx)
	go func() {
		// A missing CRD keeps an informer from ever syncing: say so instead of waiting silently.
		select {
		case <-waitCtx.Done():
		case <-time.After(30 * time.Second):
			c.log.Warn("traffic inputs not synced after 30s; are the CRDs installed (MetaRouter, ApplicationProtocol, DubboAuthorizationPolicy from the chart, Istio's)?")
		}
	}()
	ok := cache.WaitForCacheSync(ctx.Done(), hasSynced...)
	stopWait()
	if !ok {
		return nil
	}
	c.log.Info("traffic inputs synced", "took", time.Since(start).Round(time.Millisecond))
	c.markDirty()
	c.queue.Run(ctx, func(batch map[struct{}]time.Time) {
		if origin, ok := batch[struct{}{}]; ok {
			c.translateOnce(origin)
		}
	})
	return nil
}

// translateOnce reads the caches, translates and hands the result over. A panic (a bug) is
// logged and leaves everything as the previous translation left it.
func (c *Controller) translateOnce(origin time.Time) {
	defer func() {
		if r := recover(); r != nil {
			c.m.panics.Inc()
			c.log.Error("traffic translation panicked; keeping the previous result", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	start := time.Now()
	var objs []*unstructured.Unstructured
	byKey := map[problemObject]*unstructured.Unstructured{}
	for _, inf := range c.informers {
		for _, o := range inf.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				objs = append(objs, u)
				byKey[problemObject{u.GetKind(), u.GetNamespace(), u.GetName()}] = u
			}
		}
	}
	in, decodeProblems := traffic.Decode(objs)
	refs := map[types.NamespacedName]bool{}
	for _, r := range traffic.SecretRefs(in) {
		refs[r] = true
	}
	c.secretRefs.Store(&refs)
	mesh, meshProblem := c.meshConfig()
	in.Mesh = mesh
	if meshProblem != nil {
		decodeProblems = append(decodeProblems, *meshProblem)
	}
	bad := c.substituteAccepted(&in)
	out := traffic.Translate(in, c.cfg.Options)

	// Routes first: they are what changes traffic, and they take effect without a write.
	c.cfg.Routes.UpdateSince(origin, out.Routes)
	writeErrs := c.writeEnvoyFilters(append(out.EnvoyFilters, c.heldEnvoyFilters(out.Held)...))

	c.mu.Lock()
	firstSync := !c.synced
	c.synced = true
	c.mu.Unlock()
	if firstSync {
		c.cfg.Writer.AllowDeletes()
	}

	var envoyFilters []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == istio.EnvoyFilterKind.Kind {
			envoyFilters = append(envoyFilters, u)
		}
	}
	problems := slices.Concat(decodeProblems, writeErrs, out.Problems, traffic.ListenerConflicts(out.EnvoyFilters, envoyFilters))
	c.reportProblems(problems, byKey)
	c.updateStatuses(in, out, decodeProblems, bad)
	unresolved := 0
	for _, r := range out.Routers {
		unresolved += len(r.Unresolved)
	}
	c.m.observe(time.Since(start), len(out.Routes), len(out.EnvoyFilters), unresolved, problems)
	c.log.Debug("traffic translated", "metaRouters", len(in.MetaRouters), "serviceEntries", len(in.ServiceEntries),
		"routes", len(out.Routes), "envoyFilters", len(out.EnvoyFilters), "problems", len(problems),
		"took", time.Since(start).Round(time.Microsecond))
}

var (
	configMapResource = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	serviceResource   = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	secretResource    = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

func factoryFor(client dynamic.Interface, namespace string) dynamicinformer.DynamicSharedInformerFactory {
	return dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, namespace, nil)
}

func (c *Controller) allInformers() []cache.SharedIndexInformer {
	if c.meshInformer == nil {
		return c.informers
	}
	return append(slices.Clone(c.informers), c.meshInformer)
}

// meshConfig parses the mesh config ConfigMap. Missing, it means Istio's defaults; invalid,
// the last valid one stays in use and the problem is reported.
func (c *Controller) meshConfig() (*traffic.MeshConfig, *traffic.Problem) {
	if c.meshInformer == nil {
		return nil, nil
	}
	key := c.cfg.MeshConfig
	obj, ok, _ := c.meshInformer.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if !ok {
		c.lastMesh = nil
		return nil, nil
	}
	u, _ := obj.(*unstructured.Unstructured)
	data, _, _ := unstructured.NestedString(u.Object, "data", "mesh")
	mc, err := traffic.ParseMeshConfig(data)
	if err != nil {
		return c.lastMesh, &traffic.Problem{Kind: "ConfigMap", Namespace: key.Namespace, Name: key.Name, Severity: traffic.SeverityError,
			Message: fmt.Sprintf("%v; the last valid mesh config stays in use", err)}
	}
	c.lastMesh = mc
	return mc, nil
}

// invalid describes a MetaRouter whose current version is invalid on its own.
type invalid struct {
	errs       []string
	generation int64 // of the invalid version
	serving    int64 // generation of the last valid version, served instead; 0 when none
}

// substituteAccepted replaces each MetaRouter that is invalid on its own by the last valid
// version seen, so that a bad edit keeps the routes that worked instead of dropping them. What
// it validated goes into in.RouterErrors, so the translation does not validate it again.
func (c *Controller) substituteAccepted(in *traffic.Input) map[types.NamespacedName]invalid {
	c.mu.Lock()
	defer c.mu.Unlock()
	bad := map[types.NamespacedName]invalid{}
	present := map[types.NamespacedName]bool{}
	in.RouterErrors = make(map[types.NamespacedName][]string, len(in.MetaRouters))
	for i, mr := range in.MetaRouters {
		key := types.NamespacedName{Namespace: mr.Namespace, Name: mr.Name}
		present[key] = true
		errs := traffic.ValidateRouter(mr)
		in.RouterErrors[key] = errs
		if len(errs) == 0 {
			c.accepted[key] = mr
			continue
		}
		iv := invalid{errs: errs, generation: mr.Generation}
		if prev, ok := c.accepted[key]; ok {
			in.MetaRouters[i] = prev
			in.RouterErrors[key] = nil // the last valid version, validated when it was current
			iv.serving = max(prev.Generation, 1)
		}
		bad[key] = iv
	}
	for key := range c.accepted {
		if !present[key] {
			delete(c.accepted, key)
		}
	}
	return bad
}

// envoyFilterGroup is the one group the translator's EnvoyFilters are handed over as.
const envoyFilterGroup = "envoyfilters"

// writeEnvoyFilters hands every EnvoyFilter to the writer, which withdraws those no longer
// produced and writes only what changed.
func (c *Controller) writeEnvoyFilters(efs []*unstructured.Unstructured) []traffic.Problem {
	var problems []traffic.Problem
	for _, err := range c.cfg.Writer.SetGroup(envoyFilterGroup, efs) {
		p := traffic.Problem{Kind: "EnvoyFilter", Severity: traffic.SeverityError, Message: fmt.Sprintf("not written: %v", err)}
		var oe *synckube.ObjectError
		if errors.As(err, &oe) {
			p.Namespace, p.Name, p.Message = oe.Namespace, oe.Name, fmt.Sprintf("not written: %v", oe.Err)
		}
		problems = append(problems, p)
	}
	return problems
}

// heldEnvoyFilters are Meltemi's current EnvoyFilters of the names the translation held: handed
// to the writer unchanged, so that bad input (an unreadable Redis password) does not withdraw a
// configuration that worked.
func (c *Controller) heldEnvoyFilters(held []types.NamespacedName) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, key := range held {
		obj, ok, err := c.envoyFilters.GetStore().GetByKey(key.Namespace + "/" + key.Name)
		u, _ := obj.(*unstructured.Unstructured)
		if err != nil || !ok || u == nil || !traffic.Owned(u) {
			continue
		}
		kept := &unstructured.Unstructured{Object: map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "spec": u.Object["spec"]}}
		kept.SetName(u.GetName())
		kept.SetNamespace(u.GetNamespace())
		kept.SetAnnotations(u.GetAnnotations())
		out = append(out, kept)
	}
	return out
}

// problemObject identifies the object a problem is about.
type problemObject struct{ kind, namespace, name string }

// reportProblems logs problems that appeared since the last translation, and those resolved.
// A new problem of an input other than a MetaRouter (whose status and events say it) is also
// recorded as a Warning event on that object, where kubectl describe shows it.
func (c *Controller) reportProblems(problems []traffic.Problem, objs map[problemObject]*unstructured.Unstructured) {
	if c.reannounce.Swap(false) {
		c.problems = map[string]bool{}
	}
	now := map[string]bool{}
	for _, p := range problems {
		s := p.String()
		now[s] = true
		if c.problems[s] {
			continue
		}
		c.log.Warn("traffic rule problem", "kind", p.Kind, "namespace", p.Namespace, "name", p.Name,
			"severity", string(p.Severity), "problem", p.Message)
		_, hasStatus := c.redisStatus[p.Kind]
		if u := objs[problemObject{p.Kind, p.Namespace, p.Name}]; u != nil && p.Kind != mpv1.MetaRouterKind.Kind && !hasStatus &&
			c.cfg.Recorder != nil && c.status.leading() {
			c.cfg.Recorder(u, "Warning", ReasonTrafficProblem, truncate(string(p.Severity)+": "+p.Message))
		}
	}
	for s := range c.problems {
		if !now[s] {
			c.log.Info("traffic rule problem resolved", "problem", s)
		}
	}
	c.problems = now
}

// ReasonTrafficProblem is the reason of Warning events on ServiceEntries, DestinationRules and
// ApplicationProtocols the translator could not (fully) use.
const ReasonTrafficProblem = "TrafficRuleProblem"

// updateStatuses hands every MetaRouter's status to the status writer, and records an event
// when it changed.
func (c *Controller) updateStatuses(in traffic.Input, out *traffic.Output, decodeProblems []traffic.Problem, bad map[types.NamespacedName]invalid) {
	present := map[types.NamespacedName]bool{}
	for _, p := range decodeProblems {
		if p.Kind != mpv1.MetaRouterKind.Kind {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		present[key] = true
		c.status.set(key, routerStatus(nil, invalid{errs: []string{p.Message}}, 0), c.cfg.Recorder)
	}
	for _, mr := range in.MetaRouters {
		key := types.NamespacedName{Namespace: mr.Namespace, Name: mr.Name}
		present[key] = true
		gen := mr.Generation
		iv, isBad := bad[key]
		if isBad {
			gen = iv.generation // mr is the substituted version
		}
		c.status.set(key, routerStatus(out.Routers[key], iv, gen), c.cfg.Recorder)
	}
	c.status.retain(present)

	byObject := map[problemObject][]traffic.Problem{}
	for _, p := range slices.Concat(decodeProblems, out.Problems) {
		byObject[problemObject{p.Kind, p.Namespace, p.Name}] = append(byObject[problemObject{p.Kind, p.Namespace, p.Name}], p)
	}
	redisPresent := map[string]map[types.NamespacedName]bool{}
	setRedis := func(kind string, meta metav1.ObjectMeta) {
		key := types.NamespacedName{Namespace: meta.Namespace, Name: meta.Name}
		if redisPresent[kind] == nil {
			redisPresent[kind] = map[types.NamespacedName]bool{}
		}
		redisPresent[kind][key] = true
		c.redisStatus[kind].set(key, problemStatus(byObject[problemObject{kind, key.Namespace, key.Name}], meta.Generation), c.cfg.Recorder)
	}
	for _, rs := range in.RedisServices {
		setRedis(redisv1.RedisServiceKind.Kind, rs.ObjectMeta)
	}
	for _, rd := range in.RedisDestinations {
		setRedis(redisv1.RedisDestinationKind.Kind, rd.ObjectMeta)
	}
	for kind, w := range c.redisStatus {
		w.retain(redisPresent[kind])
	}
}
