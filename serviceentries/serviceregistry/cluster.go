package serviceregistry

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// ClusterSource reads ServiceRegistry objects from the cluster, keeps the manager in step
// with them and writes their status.
type ClusterSource struct {
	Dynamic   dynamic.Interface
	Kube      kubernetes.Interface
	Namespace string // "" for all namespaces
	Manager   *Manager
	// Counts and Rejections feed the status; usually the controller's store and rejections.
	Counts     func(registry string) (services, instances int)
	Rejections func(registry string) Rejections
	// Conflicts, when set, lists what objects Meltemi does not own keep from being published.
	Conflicts      func(registry string) []v1alpha1.Conflict
	StatusInterval time.Duration
	Logger         *slog.Logger
	// Events, when set, records connection loss and recovery, first sync and rejected items
	// as Kubernetes Events on the ServiceRegistry.
	Events record.EventRecorder

	// Leading, when set, tells whether this replica leads: only the leader writes statuses
	// and Events.
	Leading func() bool

	lister   cache.GenericLister
	last     map[string]supervisor.Registration
	invalid  map[string]error    // registries whose current spec cannot be used, and why
	unusable []string            // those of them with no previous configuration, sorted
	reported map[string]reported // what events were last emitted for, per registry
}

// maxStatusConflicts bounds the conflicts a status lists.
const maxStatusConflicts = 20

type reported struct {
	connected, synced bool
	rejections        int             // rejections total reported so far
	conflicts         map[string]bool // conflicts reported, by object
	problem           string          // the not-ready reason and message reported
}

// Run watches until ctx ends. It returns after the first full list has been applied when
// synced is non-nil (closed then), so callers can wait for a complete configuration.
func (s *ClusterSource) Run(ctx context.Context, synced chan<- struct{}) error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.StatusInterval <= 0 {
		s.StatusInterval = 2 * time.Second
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(s.Dynamic, 5*time.Minute, s.Namespace, nil)
	inf := factory.ForResource(v1alpha1.ServiceRegistryResource)
	s.lister = inf.Lister()
	changed := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return fmt.Errorf("watching ServiceRegistries: %w", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return fmt.Errorf("ServiceRegistry informer did not sync: %w", ctx.Err())
	}
	s.apply(ctx)
	if synced != nil {
		close(synced)
	}
	ticker := time.NewTicker(s.StatusInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			s.apply(ctx)
		case <-ticker.C:
			if len(s.invalid) > 0 {
				// What made a spec unusable may be fixed outside it (a Secret created).
				s.apply(ctx)
				continue
			}
			s.writeStatus(ctx)
		}
	}
}

func (s *ClusterSource) objects() []*unstructured.Unstructured {
	objs, err := s.lister.List(labels.Everything())
	if err != nil {
		s.Logger.Error("listing ServiceRegistries", "error", err)
		return nil
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

// apply resolves every ServiceRegistry on its own: one that cannot be resolved (bad spec,
// missing Secret) keeps its previous, working registration, so a configuration mistake never
// deletes what the registry already provides.
func (s *ClusterSource) apply(ctx context.Context) {
	next := map[string]supervisor.Registration{}
	invalid := map[string]error{}
	for _, u := range s.objects() {
		sr, err := FromUnstructured(u)
		if err == nil {
			var regs []supervisor.Registration
			regs, err = Resolve(ctx, s.Kube, []v1alpha1.ServiceRegistry{sr})
			if err == nil {
				if _, dup := next[sr.Name]; dup {
					err = fmt.Errorf("ServiceRegistry name %q is used in several namespaces; names must be unique", sr.Name)
				} else {
					next[sr.Name] = regs[0]
					continue
				}
			}
		}
		invalid[u.GetName()] = err
		s.Logger.Error("ServiceRegistry not usable; keeping its previous configuration if any", "registry", u.GetName(), "namespace", u.GetNamespace(), "error", err)
		if prev, ok := s.last[u.GetName()]; ok {
			next[u.GetName()] = prev
		}
	}
	// A registry whose spec cannot be used and that never ran is still declared: its objects
	// from an earlier run must not be taken for a removed registry's.
	var unusable []string
	for name := range invalid {
		if _, ok := next[name]; !ok {
			unusable = append(unusable, name)
		}
	}
	slices.Sort(unusable)
	sameUnusable := slices.Equal(unusable, s.unusable)
	s.invalid, s.unusable = invalid, unusable
	if reflect.DeepEqual(next, s.last) && sameUnusable {
		s.writeStatus(ctx)
		return
	}
	s.last = next
	regs := make([]supervisor.Registration, 0, len(next))
	for _, r := range next {
		regs = append(regs, r)
	}
	s.Manager.Apply(ctx, regs, unusable...)
	s.writeStatus(ctx)
}

func (s *ClusterSource) writeStatus(ctx context.Context) {
	if s.Leading != nil && !s.Leading() {
		return // only the leader writes statuses and Events
	}
	statuses := s.Manager.Statuses()
	for _, u := range s.objects() {
		st, running := statuses[u.GetName()]
		configErr := s.invalid[u.GetName()]
		if !running && configErr == nil {
			continue // not started yet
		}
		var rejections Rejections
		if s.Rejections != nil {
			rejections = s.Rejections(u.GetName())
		}
		var conflicts []v1alpha1.Conflict
		if s.Conflicts != nil {
			conflicts = s.Conflicts(u.GetName())
		}
		var current v1alpha1.ServiceRegistryStatus
		if raw, ok, _ := unstructured.NestedMap(u.Object, "status"); ok {
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &current)
		}
		status := v1alpha1.ServiceRegistryStatus{
			Connected: running && st.Connected, Synced: running && st.Synced, PluginVersion: st.PluginVersion,
			Restarts: st.Restarts, LastError: st.Message, ObservedGeneration: u.GetGeneration(),
			Conditions: conditions(current.Conditions, registryState{generation: u.GetGeneration(), running: running, st: st, configErr: configErr}),
		}
		if configErr != nil {
			status.LastError = configErr.Error()
		}
		ready := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady)
		s.recordEvents(u, st, rejections, conflicts, *ready)
		if s.Counts != nil {
			status.Services, status.Instances = s.Counts(u.GetName())
		}
		if !st.LastSync.IsZero() {
			t := metav1.NewTime(st.LastSync.Truncate(time.Second))
			status.LastSyncTime = &t
		}
		status.RejectedTotal = rejections.Total
		status.Conflicts = conflicts[:min(len(conflicts), maxStatusConflicts)]
		for _, r := range rejections.Latest {
			status.RejectedItems = append(status.RejectedItems, v1alpha1.RejectedItem{Item: r.Item, Reason: r.Reason})
		}
		want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
		if err != nil {
			continue
		}
		if current, _, _ := unstructured.NestedMap(u.Object, "status"); reflect.DeepEqual(normalize(current), normalize(want)) {
			continue
		}
		obj := u.DeepCopy()
		obj.Object["status"] = want
		if _, err := s.Dynamic.Resource(v1alpha1.ServiceRegistryResource).Namespace(u.GetNamespace()).UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
			s.Logger.Warn("updating ServiceRegistry status", "registry", u.GetName(), "error", err)
		}
	}
}

// recordEvents emits an Event for each change worth a user's attention since the last call.
func (s *ClusterSource) recordEvents(obj *unstructured.Unstructured, st supervisor.Status, rejections Rejections, conflicts []v1alpha1.Conflict, ready metav1.Condition) {
	if s.Events == nil {
		return
	}
	if s.reported == nil {
		s.reported = map[string]reported{}
	}
	name := obj.GetName()
	prev, seen := s.reported[name]
	switch {
	case st.Connected && seen && !prev.connected:
		s.Events.Event(obj, "Normal", "RegistryConnected", "registry reachable again")
	case !st.Connected && (!seen || prev.connected) && st.Message != "":
		s.Events.Eventf(obj, "Warning", "RegistryUnreachable", "registry unreachable, keeping its last-known services: %s", st.Message)
	}
	// A problem that keeps the registry from being ready, once per reason and message
	// (unreachable registries have their own Event above; waiting is not a problem).
	problem := ""
	if ready.Status == metav1.ConditionFalse && !slices.Contains([]string{ReasonWaitingForSnapshot, ReasonPluginStarting, ReasonRegistryUnreachable}, ready.Reason) {
		problem = ready.Reason + ": " + ready.Message
		if problem != prev.problem {
			s.Events.Event(obj, "Warning", ready.Reason, ready.Message)
		}
	}
	if st.Synced && !prev.synced {
		s.Events.Event(obj, "Normal", "Synced", "first complete snapshot received")
	}
	// One Event per status round for the rejections new since the last one (the recorder
	// aggregates and rate-limits repeats as Kubernetes does).
	if n := rejections.Total - prev.rejections; n > 0 && len(rejections.Latest) > 0 {
		last := rejections.Latest[len(rejections.Latest)-1]
		s.Events.Eventf(obj, "Warning", "ItemRejected", "%d new registry item(s) rejected, %d in total; latest %s: %s",
			n, rejections.Total, last.Item, last.Reason)
	}
	// A conflict is reported when it appears; once resolved and back, again.
	current := make(map[string]bool, len(conflicts))
	for _, c := range conflicts {
		current[c.Object] = true
		if !prev.conflicts[c.Object] {
			s.Events.Eventf(obj, "Warning", "Conflict", "%s: %s", c.Object, c.Message)
		}
	}
	s.reported[name] = reported{connected: st.Connected, synced: st.Synced, rejections: rejections.Total, conflicts: current, problem: problem}
}

// normalize makes numbers comparable between a decoded object (int64) and a converted one.
func normalize(m map[string]any) map[string]any {
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&struct {
		M map[string]any `json:"m"`
	}{m})
	if err != nil {
		return m
	}
	inner, _ := out["m"].(map[string]any)
	return inner
}
