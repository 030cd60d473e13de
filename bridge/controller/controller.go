// Package controller is the host's core loop: it receives validated registry state from the
// plugin supervisors, keeps it in the store (bridge/store), and turns every changed host into the
// desired ServiceEntry handed to the writer (sync/kube). Bursts of changes are coalesced:
// each host is converted once per flush, however many events touched it.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/bridge/convert"
	"github.com/meltemi-mesh/meltemi/bridge/store"
	"github.com/meltemi-mesh/meltemi/bridge/vip"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/host"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// Config tunes the controller.
type Config struct {
	Convert convert.Options
	// Debounce is the quiet time after the last change before changed hosts are written;
	// MaxDelay bounds how long a steady stream of changes can postpone a write.
	Debounce, MaxDelay time.Duration
	// VIPs, when set, gives every ServiceEntry a virtual IP.
	VIPs   *vip.Allocator
	Logger *slog.Logger
}

// Controller implements host.Sink.
type Controller struct {
	cfg    Config
	store  *store.Store
	writer synckube.Writer
	log    *slog.Logger

	mu         sync.Mutex
	dirty      map[string]time.Time // hosts changed since the last flush -> earliest such change
	firstDirty time.Time
	lastDirty  time.Time
	wake       chan struct{}
	configured bool            // SetRegistries was called: expected is complete
	expected   map[string]bool // registry -> synced
	// keepLastNonEmpty holds the registries whose services never drop to empty.
	keepLastNonEmpty map[string]bool
	status           map[string]host.Status
	rejections       map[string][]catalog.Rejection
	deletesOK        bool
	// unwritten holds, per host handed to the writer, the time of its earliest change whose
	// ServiceEntry write has not been confirmed yet (see ObjectSynced); lastSweep bounds how
	// long an entry the writer never reports on can linger.
	unwritten  map[string]time.Time
	lastSweep  time.Time
	eventWrite prometheus.Histogram
}

// New returns a controller writing through w. Until SetRegistries names the configured
// registries, and each of them has synced, deletions are held back.
func New(cfg Config, st *store.Store, w synckube.Writer) *Controller {
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
		cfg: cfg, store: st, writer: w, log: cfg.Logger,
		dirty: map[string]time.Time{}, wake: make(chan struct{}, 1),
		expected: map[string]bool{}, status: map[string]host.Status{}, rejections: map[string][]catalog.Rejection{},
		unwritten: map[string]time.Time{}, lastSweep: time.Now(),
		eventWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meltemi_registry_event_to_write_seconds",
			Help: "Time from a registry change reaching the host to the ServiceEntry it changed being written (applied or deleted); changes that need no write are not observed.",
			// 5 ms to ~40 s: debounce and write latency at the low end, backlogs at the top.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	return c
}

// Store returns the store of registry services.
func (c *Controller) Store() *store.Store { return c.store }

// Replace implements host.Sink.
func (c *Controller) Replace(registry string, services []catalog.Service, keep []string) {
	present := make(map[string]bool, len(services))
	kept := services[:0:0]
	for _, svc := range services {
		present[svc.Key] = true
		if len(svc.Instances) == 0 && c.holdsEmpty(registry, svc.Key) {
			keep = append(keep, svc.Key)
			continue
		}
		kept = append(kept, svc)
	}
	for _, key := range c.store.Keys(registry) {
		if !present[key] && c.holdsEmpty(registry, key) {
			keep = append(keep, key)
		}
	}
	c.markDirty(c.store.Replace(registry, kept, keep))
}

// Upsert implements host.Sink.
func (c *Controller) Upsert(svc catalog.Service) {
	if len(svc.Instances) == 0 && c.holdsEmpty(svc.Registry, svc.Key) {
		return
	}
	c.markDirty(c.store.Upsert(svc))
}

// Delete implements host.Sink.
func (c *Controller) Delete(registry, key string) {
	if c.holdsEmpty(registry, key) {
		return
	}
	c.markDirty(c.store.Delete(registry, key))
}

// Reject implements host.Sink; the last rejections per registry are kept for status.
func (c *Controller) Reject(r catalog.Rejection) {
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
func (c *Controller) RegistryStatus(registry string) (host.Status, []catalog.Rejection) {
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
	if !c.configured {
		return false
	}
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
			c.dirty[h] = now
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
	for h, t := range c.dirty {
		// A host still waiting for an earlier write keeps that earlier time: the next write
		// of its ServiceEntry carries both changes.
		if prev, ok := c.unwritten[h]; !ok || t.Before(prev) {
			c.unwritten[h] = t
		}
	}
	c.sweepUnwrittenLocked(now)
	c.dirty = map[string]time.Time{}
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
	return time.Hour
}

// unwrittenTTL is how long a change time waits for the writer's report before it is dropped;
// it only guards against hosts the writer never reports on (a Set it refused outright).
const unwrittenTTL = 10 * time.Minute

func (c *Controller) sweepUnwrittenLocked(now time.Time) {
	if now.Sub(c.lastSweep) < time.Minute {
		return
	}
	c.lastSweep = now
	for h, t := range c.unwritten {
		if now.Sub(t) > unwrittenTTL {
			delete(c.unwritten, h)
		}
	}
}

// ObjectSynced is the writer's report that an object is in line with its desired state
// (sync/kube's Config.OnSynced). For a host's ServiceEntry it observes the time since the
// host's earliest unwritten change when a write was made, and drops that time either way, so a
// change that needed no write leaves nothing behind.
func (c *Controller) ObjectSynced(gvk schema.GroupVersionKind, namespace, name string, wrote bool) {
	if gvk != istio.ServiceEntryKind || namespace != c.cfg.Convert.Namespace {
		return
	}
	c.mu.Lock()
	t, ok := c.unwritten[name] // a ServiceEntry is named after its host
	delete(c.unwritten, name)
	c.mu.Unlock()
	if ok && wrote {
		c.eventWrite.Observe(time.Since(t).Seconds())
	}
}

// write hands the desired objects of host h to the writer as one group: the writer deletes
// what the host no longer has (the ServiceEntry when no instance is left, WorkloadEntries of
// removed instances).
func (c *Controller) write(h string) error {
	in := convert.Input{Host: h, Services: c.store.ForHost(h)}
	if c.cfg.VIPs != nil && hasInstances(in.Services) {
		addr, err := c.cfg.VIPs.Assign(h)
		if err != nil {
			c.log.Error("no virtual IP for host", "host", h, "error", err)
		}
		in.VIP = addr
	}
	res := convert.Convert(in, c.cfg.Convert)
	var objs []*unstructured.Unstructured
	if res == nil {
		if c.cfg.VIPs != nil {
			c.cfg.VIPs.Release(h)
		}
	} else {
		for _, we := range res.WorkloadEntries {
			u, err := ToUnstructured(we)
			if err != nil {
				return err
			}
			objs = append(objs, u)
		}
		u, err := ToUnstructured(res.ServiceEntry)
		if err != nil {
			return err
		}
		objs = append(objs, u)
	}
	return errors.Join(c.writer.SetGroup(h, objs)...)
}

func hasInstances(services []catalog.Service) bool {
	for _, s := range services {
		if len(s.Instances) > 0 {
			return true
		}
	}
	return false
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

// SetRegistries names every configured registry (those not yet synced hold back deletes)
// and takes their host-side policies.
func (c *Controller) SetRegistries(regs []host.Registration) {
	c.mu.Lock()
	next := make(map[string]bool, len(regs))
	keep := make(map[string]bool, len(regs))
	for _, r := range regs {
		next[r.Name] = c.expected[r.Name]
		keep[r.Name] = r.KeepLastNonEmpty
	}
	c.expected, c.keepLastNonEmpty, c.configured = next, keep, true
	c.mu.Unlock()
	c.poke()
}

// holdsEmpty reports whether an empty or missing report for registry's service key must be
// ignored because the registry keeps last non-empty state and the store has instances.
func (c *Controller) holdsEmpty(registry, key string) bool {
	c.mu.Lock()
	keep := c.keepLastNonEmpty[registry]
	c.mu.Unlock()
	if !keep {
		return false
	}
	if prev, ok := c.store.Get(registry, key); ok && len(prev.Instances) > 0 {
		c.log.Warn("registry reported a service empty; keeping its last instances (keepLastNonEmpty)", "registry", registry, "service", key, "instances", len(prev.Instances))
		return true
	}
	return false
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
