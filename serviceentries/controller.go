// Package serviceentries is the first pipeline: registry services to ServiceEntries. Its
// Controller runs store → coalesce → decide → write: what the plugins report (through
// serviceentries/serviceregistry) is kept in the store (serviceentries/store); every host whose
// services changed is queued (internal/coalesce, once per batch however many reports touched
// it), converted (serviceentries/convert, pure), decided on (serviceentries/plan, pure: write,
// remove, withhold for a foreign owner, wait for a pending registry) and handed to the writer
// (sync/kube) as one group. What a report may change and when deletes are safe is the Policy's.
package serviceentries

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/internal/coalesce"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
	"github.com/meltemi-mesh/meltemi/serviceentries/convert"
	"github.com/meltemi-mesh/meltemi/serviceentries/plan"
	"github.com/meltemi-mesh/meltemi/serviceentries/store"
	"github.com/meltemi-mesh/meltemi/serviceentries/vip"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// Config tunes the controller.
type Config struct {
	Convert convert.Options
	// Window, when positive, writes a host at once on its first change and coalesces its
	// changes within the window after a write into one write at the window's end.
	Window time.Duration
	// Without a Window: Debounce is the quiet time after the last change before changed hosts
	// are written; MaxDelay bounds how long a steady stream of changes can postpone a write.
	Debounce, MaxDelay time.Duration
	// VIPs, when set, gives every ServiceEntry a virtual IP.
	VIPs *vip.Allocator
	// Latency, when set, is told when the hosts handed over changed.
	Latency *WriteLatency
	// Hosts, when set, tells which hosts ServiceEntries Meltemi does not own define. Such a
	// host is not written while only foreign entries define it (Istio would merge both, the
	// host would be in two ServiceEntries); with one of Meltemi's already there it is kept up
	// to date, and the duplicate reported. Call Recheck when the definitions change.
	Hosts HostLookup
	// Policy, when set, is shared with the writer (its HoldsDelete as the writer's delete
	// hold); otherwise the controller has its own.
	Policy *Policy
	// Cluster, when set, gives the ServiceEntries in the cluster: a host whose entry names a
	// registry that has not synced yet, and that the store has nothing from for the host, is
	// not rewritten until that registry syncs (it would lose that registry's endpoints).
	Cluster ObjectCache
	// Pacer, when set, is the writer's pacing: the controller hands over no more than the
	// writer can take.
	Pacer  Pacer
	Logger *slog.Logger
}

// ObjectCache returns the cluster's copy of an object Meltemi owns, or nil
// (sync/kube.Reconciler.Cached).
type ObjectCache interface {
	Cached(gvk schema.GroupVersionKind, namespace, name string) *unstructured.Unstructured
}

// HostLookup reports the foreign ServiceEntries defining a host and whether one of Meltemi's
// does (hostguard.Index).
type HostLookup interface {
	Lookup(host string) (foreign []string, owned bool)
}

// Controller receives registry state (from serviceentries/serviceregistry) and writes ServiceEntries.
type Controller struct {
	cfg    Config
	store  *store.Store
	writer synckube.Writer
	log    *slog.Logger
	queue  *coalesce.Queue[string] // hosts changed
	policy *Policy
	// deletesOK is closed once every registry's state has been handed over and the writer
	// told; only Run touches it.
	deletesOK chan struct{}
	// lastPending is the pending registries the writer was last told about (allowedOnce: it
	// was told); only Run touches them.
	lastPending []string
	allowedOnce bool

	mu       sync.Mutex
	withheld map[string][]string // host -> foreign ServiceEntries defining it, while not written
	dupes    map[string][]string // host -> foreign ServiceEntries defining it next to Meltemi's
	waiting  map[string]string   // host -> the pending registry its write waits for
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
	queue := coalesce.New[string](cfg.Debounce, cfg.MaxDelay)
	if cfg.Window > 0 {
		queue = coalesce.NewLeading[string](cfg.Window)
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{}
	}
	return &Controller{cfg: cfg, store: st, writer: w, log: cfg.Logger, queue: queue, policy: cfg.Policy, deletesOK: make(chan struct{}),
		withheld: map[string][]string{}, dupes: map[string][]string{}, waiting: map[string]string{}}
}

// Recheck writes hosts again, e.g. after the ServiceEntries defining them changed.
func (c *Controller) Recheck(hosts ...string) { c.queue.Add(hosts...) }

// Withheld returns the hosts not written because only foreign ServiceEntries define them,
// with those entries.
func (c *Controller) Withheld() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.withheld)
}

// HostConflict is a host that ServiceEntries Meltemi does not own define too.
type HostConflict struct {
	Host string
	// Foreign lists those entries ("namespace/name").
	Foreign []string
	// Withheld: only they define it, so Meltemi does not write it; otherwise Meltemi's entry
	// and theirs both define it and Istio merges them.
	Withheld bool
	// Registries provide the host.
	Registries []string
}

// HostConflicts returns the hosts in conflict with foreign ServiceEntries, sorted by host.
func (c *Controller) HostConflicts() []HostConflict {
	c.mu.Lock()
	var out []HostConflict
	for h, foreign := range c.withheld {
		out = append(out, HostConflict{Host: h, Foreign: slices.Clone(foreign), Withheld: true})
	}
	for h, foreign := range c.dupes {
		out = append(out, HostConflict{Host: h, Foreign: slices.Clone(foreign)})
	}
	c.mu.Unlock()
	for i := range out {
		for _, svc := range c.store.ForHost(out[i].Host) {
			if !slices.Contains(out[i].Registries, svc.Registry) {
				out[i].Registries = append(out[i].Registries, svc.Registry)
			}
		}
		slices.Sort(out[i].Registries)
	}
	slices.SortFunc(out, func(a, b HostConflict) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// Waiting returns the hosts not rewritten until a registry they merge syncs, with that
// registry.
func (c *Controller) Waiting() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.waiting)
}

// Store returns the store of registry services.
func (c *Controller) Store() *store.Store { return c.store }

// Replace makes services the complete state of registry, except for the keys in keep (sent
// but unusable this time), which keep theirs.
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
	c.queue.Add(c.store.Replace(registry, kept, keep)...)
}

// Upsert replaces one service.
func (c *Controller) Upsert(svc catalog.Service) {
	if len(svc.Instances) == 0 && c.holdsEmpty(svc.Registry, svc.Key) {
		return
	}
	c.queue.Add(c.store.Upsert(svc)...)
}

// Delete removes one service.
func (c *Controller) Delete(registry, key string) {
	if c.holdsEmpty(registry, key) {
		return
	}
	c.queue.Add(c.store.Delete(registry, key)...)
}

// Synced records that a registry delivered a complete snapshot.
func (c *Controller) Synced(registry string) {
	if c.policy.Synced(registry) {
		c.log.Info("registry synced", "registry", registry)
		// Through the queue, behind the hosts of the snapshot: the batch that carries the mark
		// was taken after them, so once it is written the registry's state is with the writer.
		c.queue.Add(syncedMark + registry)
	}
}

// syncedMark prefixes the queue key that says a registry synced; no host starts with it.
const syncedMark = "\x00synced:"

// SetRegistries names every configured registry (those not yet synced hold back deletes)
// and takes their host-side policies.
func (c *Controller) SetRegistries(regs []supervisor.Registration, unusable ...string) {
	c.policy.Configure(regs, unusable...)
	c.queue.Poke()
}

// RemoveRegistry forgets a registry that is no longer configured; its hosts are rewritten
// without it (and deleted when nothing else provides them).
func (c *Controller) RemoveRegistry(name string) {
	c.queue.Add(c.store.RemoveRegistry(name)...)
}

// PendingRegistries returns the configured registries whose first snapshot has not been
// handed over yet.
func (c *Controller) PendingRegistries() []string { return c.policy.PendingRegistries() }

// DeletesAllowed reports whether the writer may delete orphans (every registry synced and
// the resulting state handed over).
func (c *Controller) DeletesAllowed() bool {
	select {
	case <-c.deletesOK:
		return true
	default:
		return false
	}
}

// holdsEmpty reports whether an empty or missing report for registry's service key must be
// ignored because the registry keeps last non-empty state and the store has instances.
func (c *Controller) holdsEmpty(registry, key string) bool {
	if !c.policy.KeepsLastNonEmpty(registry) {
		return false
	}
	if prev, ok := c.store.Get(registry, key); ok && len(prev.Instances) > 0 {
		c.log.Warn("registry reported a service empty; keeping its last instances (keepLastNonEmpty)", "registry", registry, "service", key, "instances", len(prev.Instances))
		return true
	}
	return false
}

// Pacer is a writer that can be behind (sync/kube.Reconciler): WaitBacklog returns once it
// has caught up, and HandOverLimit says how many hosts to hand over at once (0: no limit).
type Pacer interface {
	WaitBacklog(ctx context.Context)
	HandOverLimit() int
}

// Run writes changed hosts until ctx ends. With a Config.Pacer, after each batch it waits while
// the writer is behind, and hands over at most as many hosts as the writer's limit, those
// changed first: hosts changed meanwhile are converted once, when the writer can take them,
// and while the writer is behind every changed host is written in turn, each with its state of
// just before its write, rather than batch after batch of states that are already old when the
// batch's last host is written.
func (c *Controller) Run(ctx context.Context) {
	paced := c.cfg.Pacer
	limit := func() int { return 0 }
	if paced != nil {
		limit = paced.HandOverLimit
	}
	c.queue.RunLimited(ctx, limit, func(batch map[string]time.Time) {
		c.flush(batch)
		if paced != nil {
			paced.WaitBacklog(ctx)
		}
	})
}

// flush writes a batch of changed hosts, then lets the writer delete the orphans of the
// registries that synced before the batch: the state those deletes are decided on has been
// handed over by then.
func (c *Controller) flush(batch map[string]time.Time) {
	var synced []string
	hosts := make([]string, 0, len(batch))
	for h := range batch {
		if reg, ok := strings.CutPrefix(h, syncedMark); ok {
			synced = append(synced, reg)
			delete(batch, h)
			continue
		}
		hosts = append(hosts, h)
	}
	slices.Sort(synced)
	if c.cfg.Latency != nil {
		c.cfg.Latency.Changed(batch)
	}
	// Oldest change first: a writer that is behind takes its queue in order, so a host changed
	// just after the previous batch is not also written last in this one.
	slices.SortFunc(hosts, func(a, b string) int {
		return cmp.Or(batch[a].Compare(batch[b]), strings.Compare(a, b))
	})
	for _, h := range hosts {
		if err := c.write(h); err != nil {
			c.log.Error("building desired state", "host", h, "error", err)
		}
	}
	c.policy.handOver(synced)
	configured, pending := c.policy.state()
	if !configured || c.allowedOnce && slices.Equal(pending, c.lastPending) {
		return
	}
	// Hosts that waited for registries no longer pending (synced, or removed) are written
	// now, before deletes are allowed: otherwise their entries would be orphans.
	c.mu.Lock()
	var resumed []string
	for h, reg := range c.waiting {
		if !slices.Contains(pending, reg) {
			resumed = append(resumed, h)
		}
	}
	c.mu.Unlock()
	slices.Sort(resumed)
	for _, h := range resumed {
		if err := c.write(h); err != nil {
			c.log.Error("building desired state", "host", h, "error", err)
		}
	}
	c.lastPending, c.allowedOnce = pending, true
	c.writer.AllowDeletes()
	if len(pending) > 0 {
		if len(synced) > 0 {
			c.log.Info("registries synced; deleting their orphaned objects is now allowed", "registries", synced, "waitingFor", pending)
		}
		return
	}
	if !c.DeletesAllowed() {
		close(c.deletesOK)
		c.log.Info("every registry synced; deleting orphaned objects is now allowed")
	}
}

// write decides what host h needs (plan.Decide) and hands its desired objects to the writer as
// one group: the writer deletes what the host no longer has (the ServiceEntry when no instance
// is left, WorkloadEntries of removed instances).
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
	host := plan.Host{Name: h, Desired: res != nil}
	for _, svc := range in.Services {
		host.Registries = append(host.Registries, svc.Registry)
	}
	d := plan.Decide(host, view{c})
	c.account(h, d)
	switch d.Action {
	case plan.Withhold, plan.Wait:
		return nil
	case plan.Remove:
		if c.cfg.VIPs != nil {
			c.cfg.VIPs.Release(h)
		}
		return errors.Join(c.writer.SetGroup(h, nil)...)
	}
	var objs []*unstructured.Unstructured
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
	return errors.Join(c.writer.SetGroup(h, objs)...)
}

// view is what plan.Decide reads: the host guard, the writer's cache and the policy.
type view struct{ c *Controller }

func (v view) Definitions(host string) ([]string, bool) {
	if v.c.cfg.Hosts == nil {
		return nil, false
	}
	return v.c.cfg.Hosts.Lookup(host)
}

func (v view) LiveRegistries(host string) []string {
	if v.c.cfg.Cluster == nil || v.c.policy.DeletesSafe() {
		return nil // nothing is pending
	}
	live := v.c.cfg.Cluster.Cached(istio.ServiceEntryKind, v.c.cfg.Convert.Namespace, host)
	if live == nil {
		return nil
	}
	return v1alpha1.Registries(live.GetLabels(), live.GetAnnotations())
}

func (v view) Pending(registry string) bool { return v.c.policy.Pending(registry) }

// account keeps the hosts withheld, duplicated and waiting as decision d says of host h, and
// logs each change of the host's standing once.
func (c *Controller) account(h string, d plan.Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d.Action == plan.Remove {
		delete(c.withheld, h)
		delete(c.dupes, h)
		delete(c.waiting, h)
		return
	}
	switch {
	case d.Action == plan.Withhold:
		if !slices.Equal(c.withheld[h], d.Foreign) {
			c.log.Warn("host not written: ServiceEntries Meltemi does not own define it (delete them to hand the host over)",
				"host", h, "serviceEntries", strings.Join(d.Foreign, ","))
		}
		c.withheld[h] = d.Foreign
		delete(c.dupes, h)
		return // a withheld host's wait, if any, stands until it is decided again
	case len(d.Foreign) > 0:
		if !slices.Equal(c.dupes[h], d.Foreign) {
			c.log.Warn("host is defined by Meltemi's ServiceEntry and by others: Istio merges them; delete the others",
				"host", h, "serviceEntries", strings.Join(d.Foreign, ","))
		}
		c.dupes[h] = d.Foreign
		delete(c.withheld, h)
	default:
		if _, was := c.withheld[h]; was {
			c.log.Info("host handed over: no foreign ServiceEntry defines it any more", "host", h)
		}
		delete(c.withheld, h)
		delete(c.dupes, h)
	}
	if d.Action != plan.Wait {
		delete(c.waiting, h)
		return
	}
	if c.waiting[h] != d.WaitFor {
		c.log.Info("host not rewritten until a registry it merges syncs: it keeps that registry's endpoints meanwhile",
			"host", h, "registry", d.WaitFor)
	}
	c.waiting[h] = d.WaitFor
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
