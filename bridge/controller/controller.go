// Package controller is the host's core loop: it receives validated registry state from the
// plugin supervisors, keeps it in the model store, and turns every changed host into the
// desired ServiceEntry handed to the writer (sync/kube). Bursts of changes are coalesced:
// each host is converted once per flush, however many events touched it.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/bridge/convert"
	"github.com/meltemi-mesh/meltemi/bridge/model"
	"github.com/meltemi-mesh/meltemi/plugins/host"
)

// Writer applies desired objects; sync/kube's Reconciler implements it.
type Writer interface {
	Set(obj *unstructured.Unstructured) error
	Unset(gvk schema.GroupVersionKind, namespace, name string)
	// AllowDeletes is called once every registry has delivered a complete snapshot and the
	// desired state built from them has been handed over: only then can an owned object that
	// nobody wants be told apart from one whose registry has not reported yet.
	AllowDeletes()
}

// Config tunes the controller.
type Config struct {
	Convert convert.Options
	// Debounce is the quiet time after the last change before changed hosts are written;
	// MaxDelay bounds how long a steady stream of changes can postpone a write.
	Debounce, MaxDelay time.Duration
	Logger             *slog.Logger
}

// Controller implements host.Sink.
type Controller struct {
	cfg    Config
	store  *model.Store
	writer Writer
	log    *slog.Logger

	mu         sync.Mutex
	dirty      map[string]struct{} // hosts changed since the last flush
	firstDirty time.Time
	lastDirty  time.Time
	wake       chan struct{}
	expected   map[string]bool // registry -> synced
	status     map[string]host.Status
	rejections map[string][]model.Rejection
	deletesOK  bool
	flushed    chan struct{} // closed and replaced after each flush, for WaitFlushed
}

// New returns a controller writing through w. expected lists every configured registry:
// deletions are held back until each of them has synced.
func New(cfg Config, store *model.Store, w Writer, expected []string) *Controller {
	if cfg.Debounce <= 0 {
		cfg.Debounce = 50 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Controller{
		cfg: cfg, store: store, writer: w, log: cfg.Logger,
		dirty: map[string]struct{}{}, wake: make(chan struct{}, 1),
		expected: map[string]bool{}, status: map[string]host.Status{}, rejections: map[string][]model.Rejection{},
		flushed: make(chan struct{}),
	}
	for _, r := range expected {
		c.expected[r] = false
	}
	return c
}

// Store returns the model store.
func (c *Controller) Store() *model.Store { return c.store }

// Replace implements host.Sink.
func (c *Controller) Replace(registry string, services []model.Service, keep []string) {
	c.markDirty(c.store.Replace(registry, services, keep))
}

// Upsert implements host.Sink.
func (c *Controller) Upsert(svc model.Service) { c.markDirty(c.store.Upsert(svc)) }

// Delete implements host.Sink.
func (c *Controller) Delete(registry, key string) { c.markDirty(c.store.Delete(registry, key)) }

// Reject implements host.Sink; the last rejections per registry are kept for status.
func (c *Controller) Reject(r model.Rejection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	const keepLast = 20
	list := append(c.rejections[r.Registry], r)
	if len(list) > keepLast {
		list = list[len(list)-keepLast:]
	}
	c.rejections[r.Registry] = list
}

// Status implements host.Sink.
func (c *Controller) Status(registry string, st host.Status) {
	c.mu.Lock()
	c.status[registry] = st
	if st.Synced {
		if synced, ok := c.expected[registry]; ok && !synced {
			c.expected[registry] = true
			c.log.Info("registry synced", "registry", registry)
		}
	}
	c.mu.Unlock()
	c.poke()
}

// RegistryStatus returns the last status of a registry and its recent rejections.
func (c *Controller) RegistryStatus(registry string) (host.Status, []model.Rejection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status[registry], slices.Clone(c.rejections[registry])
}

// AllSynced reports whether every expected registry has delivered a snapshot.
func (c *Controller) AllSynced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allSyncedLocked()
}

func (c *Controller) allSyncedLocked() bool {
	for _, synced := range c.expected {
		if !synced {
			return false
		}
	}
	return true
}

// DeletesAllowed reports whether the writer may delete orphans (every registry synced and
// the resulting state handed over).
func (c *Controller) DeletesAllowed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deletesOK
}

func (c *Controller) markDirty(hosts []string) {
	if len(hosts) == 0 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	if len(c.dirty) == 0 {
		c.firstDirty = now
	}
	c.lastDirty = now
	for _, h := range hosts {
		if _, ok := c.dirty[h]; !ok {
			c.dirty[h] = struct{}{}
		}
	}
	c.mu.Unlock()
	c.poke()
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run flushes changed hosts until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := c.flushIfDue()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-timer.C:
		}
	}
}

// flushIfDue writes the dirty hosts when the debounce window or the maximum delay has
// passed, and returns how long to wait before looking again.
func (c *Controller) flushIfDue() time.Duration {
	c.mu.Lock()
	now := time.Now()
	if len(c.dirty) > 0 {
		quiet := c.lastDirty.Add(c.cfg.Debounce)
		deadline := c.firstDirty.Add(c.cfg.MaxDelay)
		if now.Before(quiet) && now.Before(deadline) {
			c.mu.Unlock()
			return min(quiet.Sub(now), deadline.Sub(now))
		}
	}
	hosts := slices.Sorted(maps.Keys(c.dirty))
	c.dirty = map[string]struct{}{}
	allowDeletes := !c.deletesOK && c.allSyncedLocked()
	c.mu.Unlock()

	for _, h := range hosts {
		if err := c.write(h); err != nil {
			c.log.Error("building desired state", "host", h, "error", err)
		}
	}
	if allowDeletes {
		c.writer.AllowDeletes()
		c.mu.Lock()
		c.deletesOK = true
		c.mu.Unlock()
		c.log.Info("every registry synced; deleting orphaned objects is now allowed")
	}
	if len(hosts) > 0 || allowDeletes {
		c.mu.Lock()
		close(c.flushed)
		c.flushed = make(chan struct{})
		c.mu.Unlock()
	}
	return time.Hour
}

func (c *Controller) write(h string) error {
	se := convert.ServiceEntry(h, c.store.ForHost(h), c.cfg.Convert)
	if se == nil {
		c.writer.Unset(istio.ServiceEntryKind, c.cfg.Convert.Namespace, h)
		return nil
	}
	obj, err := ToUnstructured(se)
	if err != nil {
		return err
	}
	return c.writer.Set(obj)
}

// ToUnstructured converts a typed object for the dynamic client.
func ToUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("converting %T: %w", obj, err)
	}
	u := &unstructured.Unstructured{Object: m}
	// The converter keeps empty creationTimestamp; the API server would drop it anyway,
	// and it must not make desired and current state look different.
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

// SetExpected names every configured registry; registries not yet synced hold back deletes.
func (c *Controller) SetExpected(names []string) {
	c.mu.Lock()
	next := make(map[string]bool, len(names))
	for _, n := range names {
		next[n] = c.expected[n]
	}
	c.expected = next
	c.mu.Unlock()
	c.poke()
}

// RemoveRegistry forgets a registry that is no longer configured; its hosts are rewritten
// without it (and deleted when nothing else provides them).
func (c *Controller) RemoveRegistry(name string) {
	c.markDirty(c.store.RemoveRegistry(name))
	c.mu.Lock()
	delete(c.status, name)
	delete(c.rejections, name)
	c.mu.Unlock()
}
