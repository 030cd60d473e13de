package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
)

// errForeign marks a refusal because a foreign object holds a desired name; it is retried with
// backoff (the foreign object may go away) and counted as a conflict, not as an error.
var errForeign = errors.New("name taken by an object not managed by meltemi")

// writeTimeout bounds one write: a request the server took but never answers (it happens while
// an API server starts) must not hold a worker.
const writeTimeout = 30 * time.Second

// errStale marks a write rejected by its precondition (409); it is retried with backoff after
// the cache has caught up.
var errStale = errors.New("object changed since it was read")

func (r *Reconciler) processNext(ctx context.Context) bool {
	k, quit := r.queue.Get()
	if quit {
		return false
	}
	defer func() {
		r.queue.Done(k)
		select {
		case r.progress <- struct{}{}:
		default:
		}
	}()
	wrote, err := r.sync(ctx, k)
	switch {
	case err == nil:
		r.backoff.Forget(k)
		if wrote {
			r.serverAnswered()
		}
		if r.cfg.OnSynced != nil {
			ks := r.kinds[k.kind]
			r.cfg.OnSynced(ks.GVK, k.namespace, k.name, wrote)
		}
	case ctx.Err() != nil:
		// Shutting down: the write was cut short, nothing to report.
	case errors.Is(err, errForeign):
		r.retryLater(k, err)
	case errors.Is(err, errStale):
		r.stale.Add(1)
		r.log.Debug("write precondition failed, retrying", "kind", r.kinds[k.kind].label,
			"namespace", k.namespace, "name", k.name, "err", err)
		r.retryLater(k, err)
	default:
		r.errs.Add(1)
		r.m.errors.WithLabelValues(r.kinds[k.kind].label).Inc()
		retries := r.backoff.NumRequeues(k)
		r.log.Error("reconcile failed, retrying", "kind", r.kinds[k.kind].label,
			"namespace", k.namespace, "name", k.name, "retries", retries, "err", err)
		if retries == 0 { // one event per run of failures
			r.mu.RLock()
			want := r.desired[k]
			r.mu.RUnlock()
			if want != nil && want.d != nil {
				r.record(want.d.ref(), EventTypeWarning, ReasonWriteFailed, err.Error())
			}
		}
		r.retryLater(k, err)
	}
	return true
}

// cached returns the informer's copy of an object, or nil.
func (r *Reconciler) cached(k objKey) *unstructured.Unstructured {
	key := k.name
	if k.namespace != "" {
		key = k.namespace + "/" + k.name
	}
	obj, ok, err := r.kinds[k.kind].informer.GetIndexer().GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	u, _ := obj.(*unstructured.Unstructured)
	return u
}

// sync brings one key in line: decide from the desired state and the cache, write at most once.
// wrote reports whether it made an API write.
func (r *Reconciler) sync(ctx context.Context, k objKey) (wrote bool, err error) {
	ks := r.kinds[k.kind]
	live := r.cached(k)

	r.mu.Lock()
	want := r.desired[k]
	w := r.lastWrite[k]
	if w != nil && (observes(w, live, false) || time.Since(w.at) > observeTimeout) {
		delete(r.lastWrite, k)
		w = nil
	}
	r.mu.Unlock()
	if w != nil && w.deleted && live != nil && live.GetUID() == w.uid {
		live = nil // we deleted it; the cache has not caught up yet
	}

	if want == nil {
		return r.syncOrphan(ctx, k, live)
	}
	r.setPending(k, false)
	if want.refused != nil {
		return false, nil // hold: neither write nor delete until the desired state changes
	}
	d := want.d
	if live != nil && !r.owned(live) {
		return false, r.refuseForeign(k, live)
	}
	r.clearConflict(k)
	if live != nil && live.GetDeletionTimestamp() != nil {
		// Being deleted (finalizers); its delete event queues the key again for re-creation.
		return false, nil
	}

	exists, rv := false, ""
	switch {
	case w != nil && !w.deleted:
		// Our last write is not in the cache yet: trust it over the cache.
		if w.hash == d.hash {
			r.noop(ks.label)
			return false, nil
		}
		exists, rv = true, w.resourceVersion
	case live != nil:
		state := compareCached(d, live)
		if state == inSyncNow {
			r.noop(ks.label)
			return false, nil
		}
		r.mu.RLock()
		a, ok := r.applied[k]
		r.mu.RUnlock()
		if ok && a.hash == d.hash && a.resourceVersion == live.GetResourceVersion() {
			// Unchanged since we applied this very content; the difference is the server's.
			r.noop(ks.label)
			return false, nil
		}
		exists, rv = true, live.GetResourceVersion()
		if state == undecided {
			full, err := r.read(ctx, k)
			if err != nil {
				return false, err
			}
			switch {
			case full == nil:
				exists, rv = false, "" // deleted meanwhile; its event is on its way
			case !r.owned(full):
				return false, nil // no longer ours; its event queues the key again
			case inSync(d, full):
				r.mu.Lock()
				r.applied[k] = appliedRecord{hash: d.hash, resourceVersion: full.GetResourceVersion()}
				r.mu.Unlock()
				r.noop(ks.label)
				return false, nil
			default:
				rv = full.GetResourceVersion()
			}
		}
	}
	return r.apply(ctx, k, d, exists, rv)
}

// read gets an object whole from the API server, or nil if there is none: the cache keeps only
// a digest of owned objects' content, which cannot tell a value the server defaulted from
// drift. Objects as Meltemi writes them come back as they were sent, so this is rare: after a
// restart, at most once per object whose stored form differs from what was applied.
func (r *Reconciler) read(ctx context.Context, k objKey) (*unstructured.Unstructured, error) {
	ks := r.kinds[k.kind]
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	u, err := ks.client.Namespace(k.namespace).Get(ctx, k.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", ks.label, k.namespace, k.name, &callError{err})
	}
	r.reads.Add(1)
	r.m.reads.WithLabelValues(ks.label).Inc()
	return u, nil
}

func (r *Reconciler) noop(kind string) {
	r.noops.Add(1)
	r.m.noops.WithLabelValues(kind).Inc()
}

// apply writes the desired object with server-side apply. Updates are forced (they take back
// fields someone else changed) and conditional on the resourceVersion we decided on, so an
// object that changed meanwhile — e.g. stopped being ours — is never overwritten. Creates are
// not forced: the only way an apply to a name absent from the cache can meet a field owned by
// another manager is a foreign object created in the meantime, and then the 409 makes us look
// again instead of taking it over.
func (r *Reconciler) apply(ctx context.Context, k objKey, d *desiredObject, exists bool, rv string) (bool, error) {
	ks := r.kinds[k.kind]
	body, err := d.applyBody(rv)
	if err != nil {
		return false, err
	}
	if err := r.limiter.Wait(ctx); err != nil {
		return false, err
	}
	force := exists
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	// FieldValidation Ignore: with the default (Warn) the API server parses the YAML apply body
	// a second time, strictly, only to produce warnings — about a fifth of the server's cost
	// of an apply. Fields the schema drops are reported below from the response instead.
	start := time.Now()
	out, err := ks.client.Namespace(k.namespace).Patch(ctx, k.name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: r.cfg.FieldManager, Force: &force, FieldValidation: metav1.FieldValidationIgnore})
	r.m.writeSeconds.WithLabelValues("apply", ks.label).Observe(time.Since(start).Seconds())
	if err != nil {
		if apierrors.IsConflict(err) {
			return false, fmt.Errorf("%w: apply %s %s/%s: %v", errStale, ks.label, k.namespace, k.name, err)
		}
		return false, fmt.Errorf("apply %s %s/%s: %w", ks.label, k.namespace, k.name, &callError{err})
	}
	r.mu.Lock()
	r.lastWrite[k] = &writeRecord{hash: d.hash, resourceVersion: out.GetResourceVersion(), uid: out.GetUID(), at: time.Now()}
	r.applied[k] = appliedRecord{hash: d.hash, resourceVersion: out.GetResourceVersion()}
	r.mu.Unlock()
	if !inSync(d, out) {
		// The server rewrote part of what we sent (a value it normalises or defaults inside a
		// list; unknown fields are rejected by apply rather than dropped). The applied record
		// keeps this from causing repeated writes while the object stays as the server left it.
		r.log.Warn("object as stored differs from the desired object", "kind", ks.label,
			"namespace", k.namespace, "name", k.name)
	}
	r.applies.Add(1)
	if !exists {
		r.creates.Add(1)
	}
	r.m.writes.WithLabelValues("apply", ks.label).Inc()
	r.log.Debug("applied", "kind", ks.label, "namespace", k.namespace, "name", k.name,
		"create", !exists, "resourceVersion", out.GetResourceVersion())
	return true, nil
}

// syncOrphan handles a key nobody desires: an owned object there is deleted once deletes are
// allowed, and counted as pending until then. The delete is conditional on the UID and
// resourceVersion the decision was made on.
func (r *Reconciler) syncOrphan(ctx context.Context, k objKey, live *unstructured.Unstructured) (bool, error) {
	r.clearConflict(k)
	if live == nil || !r.owned(live) || live.GetDeletionTimestamp() != nil {
		r.setPending(k, false)
		r.mu.Lock()
		delete(r.applied, k)
		r.mu.Unlock()
		return false, nil
	}
	if !r.allowDeletes.Load() || r.cfg.HoldDelete != nil && r.cfg.HoldDelete(live.GetLabels(), live.GetAnnotations()) {
		r.setPending(k, true)
		return false, nil
	}
	r.setPending(k, false)
	ks := r.kinds[k.kind]
	if err := r.limiter.Wait(ctx); err != nil {
		return false, err
	}
	// The UID keeps a re-created object safe; the resourceVersion makes sure the object is
	// still the owned one the cache showed: if someone removed the ownership label meanwhile,
	// the delete fails with 409 and the next look finds a foreign object.
	uid, rv := live.GetUID(), live.GetResourceVersion()
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	start := time.Now()
	err := ks.client.Namespace(k.namespace).Delete(ctx, k.name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
	})
	r.m.writeSeconds.WithLabelValues("delete", ks.label).Observe(time.Since(start).Seconds())
	switch {
	case apierrors.IsNotFound(err):
		return false, nil // already gone
	case apierrors.IsConflict(err):
		// Changed or replaced since the cache showed it; look again once the cache catches up.
		return false, fmt.Errorf("%w: delete %s %s/%s: %v", errStale, ks.label, k.namespace, k.name, err)
	case err != nil:
		return false, fmt.Errorf("delete %s %s/%s: %w", ks.label, k.namespace, k.name, &callError{err})
	}
	r.mu.Lock()
	r.lastWrite[k] = &writeRecord{deleted: true, uid: uid, at: time.Now()}
	delete(r.applied, k)
	r.mu.Unlock()
	r.deletes.Add(1)
	r.m.writes.WithLabelValues("delete", ks.label).Inc()
	r.log.Debug("deleted orphan", "kind", ks.label, "namespace", k.namespace, "name", k.name, "uid", uid)
	return true, nil
}

// refuseForeign reports a desired name held by an object Meltemi does not own. The first
// refusal for a given foreign object is logged as a warning and recorded as an event.
func (r *Reconciler) refuseForeign(k objKey, live *unstructured.Unstructured) error {
	ks := r.kinds[k.kind]
	r.foreign.Add(1)
	r.m.conflicts.WithLabelValues(ks.label).Inc()
	r.mu.Lock()
	first := r.conflicts[k] != live.GetUID()
	r.conflicts[k] = live.GetUID()
	n := len(r.conflicts)
	r.mu.Unlock()
	r.m.nameConflicts.Set(float64(n))
	msg := fmt.Sprintf("%s %s/%s exists and is not managed by meltemi (no label %s=%s); not touching it, will retry",
		ks.label, k.namespace, k.name, v1alpha1.LabelManagedBy, v1alpha1.ManagedByValue)
	if first {
		r.log.Warn("desired name taken by a foreign object", "kind", ks.label, "namespace", k.namespace,
			"name", k.name, "uid", live.GetUID())
		r.record(live, EventTypeWarning, ReasonForeignObject, msg)
	} else {
		r.log.Debug("desired name still taken by a foreign object", "kind", ks.label, "namespace", k.namespace, "name", k.name)
	}
	return errForeign
}

func (r *Reconciler) clearConflict(k objKey) {
	r.mu.Lock()
	_, had := r.conflicts[k]
	delete(r.conflicts, k)
	n := len(r.conflicts)
	r.mu.Unlock()
	if had {
		r.m.nameConflicts.Set(float64(n))
	}
}

func (r *Reconciler) setPending(k objKey, on bool) {
	r.mu.Lock()
	_, was := r.pending[k]
	if on && !was {
		r.pending[k] = struct{}{}
	} else if !on && was {
		delete(r.pending, k)
	}
	n := len(r.pending)
	r.mu.Unlock()
	if on != was {
		r.m.pendingDeletes.Set(float64(n))
	}
}

// observes reports whether a cache state (an object, or its absence; deleted for a delete
// event) reflects a write record, i.e. the cache has caught up with our write.
func observes(w *writeRecord, u *unstructured.Unstructured, deleted bool) bool {
	if w.deleted {
		return u == nil || u.GetUID() != w.uid || deleted
	}
	if u == nil {
		return false
	}
	if deleted {
		// The object we wrote (or a later one) is gone: the cache is past our write.
		return u.GetUID() == w.uid || rvAtLeast(u.GetResourceVersion(), w.resourceVersion)
	}
	return rvAtLeast(u.GetResourceVersion(), w.resourceVersion)
}

// rvAtLeast compares resource versions of one resource; where they are not comparable integers
// only equality counts.
func rvAtLeast(have, want string) bool {
	c, err := resourceversion.CompareResourceVersion(have, want)
	if err != nil {
		return have == want
	}
	return c >= 0
}
