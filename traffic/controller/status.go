package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic"
)

// condition is a status condition without its transition time, which is kept from the current
// status while the condition's status does not change.
type condition struct {
	Type, Status, Reason, Message string
}

// statusContent is what Meltemi wants a MetaRouter's status to say.
type statusContent struct {
	ObservedGeneration int64
	Conditions         []condition
}

// maxMessage keeps condition messages well below the API's limit of 32768 bytes.
const maxMessage = 4096

func truncate(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return s[:maxMessage-3] + "..."
}

// routerStatus builds the status of a MetaRouter from its translation result (nil when it
// could not be decoded) and from the errors of its current version, if invalid.
func routerStatus(res *traffic.RouterResult, iv invalid, generation int64) statusContent {
	st := statusContent{ObservedGeneration: generation}
	accepted := condition{Type: mpv1.ConditionAccepted}
	switch {
	case len(iv.errs) > 0:
		accepted.Status, accepted.Reason = string(metav1.ConditionFalse), mpv1.ReasonInvalid
		accepted.Message = "invalid: " + strings.Join(iv.errs, "; ")
		if iv.serving > 0 {
			accepted.Message += fmt.Sprintf("; generation %d is still served", iv.serving)
		} else {
			accepted.Message += "; not applied"
		}
	case res == nil:
		return st
	case len(res.Errors) > 0:
		accepted.Status, accepted.Reason = string(metav1.ConditionFalse), mpv1.ReasonInvalid
		accepted.Message = "invalid: " + strings.Join(res.Errors, "; ") + "; not applied"
	case res.Accepted():
		accepted.Status, accepted.Reason = string(metav1.ConditionTrue), mpv1.ReasonAccepted
		accepted.Message = "routes " + strings.Join(res.Hosts, ", ")
		if len(res.Conflicts) > 0 {
			accepted.Message += "; " + strings.Join(res.Conflicts, "; ")
		}
	default:
		accepted.Status, accepted.Reason = string(metav1.ConditionFalse), mpv1.ReasonConflict
		accepted.Message = strings.Join(res.Conflicts, "; ")
	}
	accepted.Message = truncate(accepted.Message)
	st.Conditions = append(st.Conditions, accepted)
	if res != nil && len(res.Errors) == 0 && (len(iv.errs) == 0 || iv.serving > 0) {
		refs := condition{Type: mpv1.ConditionResolvedRefs, Status: string(metav1.ConditionTrue),
			Reason: mpv1.ReasonResolved, Message: "every host, subset and port referred to exists"}
		if len(res.Warnings) > 0 {
			refs.Status, refs.Reason = string(metav1.ConditionFalse), mpv1.ReasonUnresolvedRefs
			refs.Message = truncate(strings.Join(res.Warnings, "; "))
		}
		st.Conditions = append(st.Conditions, refs)
		supported := condition{Type: mpv1.ConditionSupported, Status: string(metav1.ConditionTrue),
			Reason: mpv1.ReasonSupported, Message: "every field set is applied"}
		if len(res.Unsupported) > 0 {
			supported.Status, supported.Reason = string(metav1.ConditionFalse), mpv1.ReasonUnsupported
			supported.Message = truncate(strings.Join(res.Unsupported, "; "))
		}
		st.Conditions = append(st.Conditions, supported)
	}
	return st
}

// problemStatus is the status of an object the translator reports on only through problems
// (RedisServices, RedisDestinations): Accepted is false while it has errors (the parts named
// are not applied), ResolvedRefs false while it has warnings.
func problemStatus(problems []traffic.Problem, generation int64) statusContent {
	var errs, warns []string
	for _, p := range problems {
		if p.Severity == traffic.SeverityError {
			errs = append(errs, p.Message)
		} else {
			warns = append(warns, p.Message)
		}
	}
	accepted := condition{Type: mpv1.ConditionAccepted, Status: string(metav1.ConditionTrue), Reason: mpv1.ReasonAccepted, Message: "applied"}
	if len(errs) > 0 {
		accepted.Status, accepted.Reason = string(metav1.ConditionFalse), mpv1.ReasonInvalid
		accepted.Message = truncate(strings.Join(errs, "; "))
	}
	refs := condition{Type: mpv1.ConditionResolvedRefs, Status: string(metav1.ConditionTrue), Reason: mpv1.ReasonResolved,
		Message: "every host referred to exists"}
	if len(warns) > 0 {
		refs.Status, refs.Reason = string(metav1.ConditionFalse), mpv1.ReasonUnresolvedRefs
		refs.Message = truncate(strings.Join(warns, "; "))
	}
	return statusContent{ObservedGeneration: generation, Conditions: []condition{accepted, refs}}
}

// event is the event to record for a status: a warning for the first false condition, else a
// normal Accepted event.
func (st statusContent) event() (eventType, reason, message string) {
	for _, c := range st.Conditions {
		if c.Status == string(metav1.ConditionFalse) {
			return "Warning", c.Reason, c.Message
		}
	}
	for _, c := range st.Conditions {
		if c.Type == mpv1.ConditionAccepted {
			return "Normal", c.Reason, c.Message
		}
	}
	return "", "", ""
}

// currentStatus reads the status of a cached MetaRouter.
func currentStatus(u *unstructured.Unstructured) (statusContent, []metav1.Condition) {
	var s mpv1.MetaRouterStatus
	if m, ok, _ := unstructured.NestedMap(u.Object, "status"); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &s) // a foreign shape reads as empty
	}
	st := statusContent{ObservedGeneration: s.ObservedGeneration}
	for _, c := range s.Conditions {
		st.Conditions = append(st.Conditions, condition{c.Type, string(c.Status), c.Reason, c.Message})
	}
	return st, s.Conditions
}

func (st statusContent) equal(o statusContent) bool {
	return st.ObservedGeneration == o.ObservedGeneration && slices.Equal(st.Conditions, o.Conditions)
}

// statusWriter writes the statuses of one kind (MetaRouters, RedisServices, …) in the background, coalescing changes per object and
// skipping writes that change nothing, so that translations never wait for status writes.
type statusWriter struct {
	kind     string
	client   dynamic.NamespaceableResourceInterface
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName]
	leading  func() bool
	m        *metrics
	log      *slog.Logger

	mu      sync.Mutex
	desired map[types.NamespacedName]statusContent
}

func newStatusWriter(client dynamic.Interface, gvr schema.GroupVersionResource, kind string, informer cache.SharedIndexInformer,
	leading func() bool, m *metrics, log *slog.Logger) *statusWriter {
	return &statusWriter{
		kind:     kind,
		client:   client.Resource(gvr),
		informer: informer,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](50*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "meltemi-" + strings.ToLower(kind) + "-status"}),
		leading: leading, m: m, log: log,
		desired: map[types.NamespacedName]statusContent{},
	}
}

func (w *statusWriter) cached(key types.NamespacedName) *unstructured.Unstructured {
	obj, ok, err := w.informer.GetStore().GetByKey(key.Namespace + "/" + key.Name)
	if err != nil || !ok {
		return nil
	}
	u, _ := obj.(*unstructured.Unstructured)
	return u
}

// set makes st the desired status of a MetaRouter. When it differs from both the stored status
// and the last desired one, an event is recorded and a write queued.
func (w *statusWriter) set(key types.NamespacedName, st statusContent, record func(runtime.Object, string, string, string)) {
	if len(st.Conditions) == 0 {
		return
	}
	u := w.cached(key)
	if u == nil || !w.leading() {
		return
	}
	current, _ := currentStatus(u)
	w.mu.Lock()
	prev, had := w.desired[key]
	w.desired[key] = st
	w.mu.Unlock()
	if current.equal(st) {
		return
	}
	if record != nil && (!had || !prev.equal(st)) {
		if typ, reason, msg := st.event(); typ != "" {
			record(u, typ, reason, msg)
		}
	}
	w.queue.Add(key)
}

// retain forgets the desired status of MetaRouters that no longer exist.
func (w *statusWriter) retain(present map[types.NamespacedName]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.desired {
		if !present[key] {
			delete(w.desired, key)
		}
	}
}

func (w *statusWriter) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		err := w.write(ctx, key)
		switch {
		case err == nil:
			w.queue.Forget(key)
		case ctx.Err() != nil:
		default:
			w.m.statusWrites.WithLabelValues("error").Inc()
			w.log.Warn("writing status failed, retrying", "kind", w.kind, "namespace", key.Namespace, "name", key.Name, "err", err)
			w.queue.AddRateLimited(key)
		}
		w.queue.Done(key)
	}
}

// write patches the status subresource when the stored status differs from the desired one.
// Transition times are kept for conditions whose status did not change.
func (w *statusWriter) write(ctx context.Context, key types.NamespacedName) error {
	w.mu.Lock()
	st, ok := w.desired[key]
	w.mu.Unlock()
	u := w.cached(key)
	if !ok || u == nil || !w.leading() {
		return nil
	}
	current, conds := currentStatus(u)
	if current.equal(st) {
		return nil
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	var out []metav1.Condition
	for _, c := range st.Conditions {
		mc := metav1.Condition{Type: c.Type, Status: metav1.ConditionStatus(c.Status), Reason: c.Reason, Message: c.Message,
			ObservedGeneration: st.ObservedGeneration, LastTransitionTime: now}
		for _, old := range conds {
			if old.Type == c.Type && string(old.Status) == c.Status {
				mc.LastTransitionTime = old.LastTransitionTime
			}
		}
		out = append(out, mc)
	}
	body, err := json.Marshal(map[string]any{"status": mpv1.MetaRouterStatus{ObservedGeneration: st.ObservedGeneration, Conditions: out}})
	if err != nil {
		return err
	}
	_, err = w.client.Namespace(key.Namespace).Patch(ctx, key.Name, types.MergePatchType, body,
		metav1.PatchOptions{FieldManager: "meltemi"}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("patching status of %s %s: %w", w.kind, key, err)
	}
	w.m.statusWrites.WithLabelValues("ok").Inc()
	return nil
}
