package serviceentries

import (
	"maps"
	"slices"
	"sync"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// Policy holds the rules that keep registry reports from deleting what they should not, as
// external-dns's plan.Policy decides which changes a plan may apply:
//   - keep last non-empty: a registry configured so never has a service emptied or removed
//     while the store still holds instances of it;
//   - safe deletes, per registry: an object nobody wants is deleted only once the registries
//     are known and every registry it names has delivered a complete snapshot that has been
//     handed to the writer, so an object whose registry has not reported yet is never taken for
//     an orphan, and one registry that cannot sync holds back only its own objects;
//   - a host in the cluster that names a registry still pending is not rewritten without that
//     registry's instances, so a merged host keeps them until it syncs.
type Policy struct {
	mu         sync.Mutex
	configured bool                      // the registry configuration has been loaded
	registries map[string]registryPolicy // by name
}

type registryPolicy struct {
	keepLastNonEmpty bool
	synced           bool // its complete snapshot arrived
	handedOver       bool // and the state built from it went to the writer
}

// Configure names every configured registry and takes its policy; a registry configured
// before keeps its synced state. unusable registries are declared but cannot run (their spec
// cannot be used): they stay pending, so the objects they wrote are kept.
func (p *Policy) Configure(regs []supervisor.Registration, unusable ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[string]registryPolicy, len(regs))
	for _, r := range regs {
		prev := p.registries[r.Name]
		next[r.Name] = registryPolicy{keepLastNonEmpty: r.KeepLastNonEmpty, synced: prev.synced, handedOver: prev.handedOver}
	}
	for _, name := range unusable {
		if _, ok := next[name]; !ok {
			next[name] = registryPolicy{}
		}
	}
	p.registries, p.configured = next, true
}

// KeepsLastNonEmpty reports whether registry's services never drop to empty.
func (p *Policy) KeepsLastNonEmpty(registry string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.registries[registry].keepLastNonEmpty
}

// Synced records a registry's complete snapshot; it reports whether that is news.
func (p *Policy) Synced(registry string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	rp, ok := p.registries[registry]
	if !ok || rp.synced {
		return false
	}
	rp.synced = true
	p.registries[registry] = rp
	return true
}

// handOver records that the state built from these registries' snapshots is with the writer
// (those synced; the controller hands a registry over after the batch its synced mark came in).
func (p *Policy) handOver(names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range names {
		if rp, ok := p.registries[name]; ok {
			rp.handedOver = true
			p.registries[name] = rp
		}
	}
}

// Pending reports whether registry is configured and its state not yet handed over (every
// registry is pending until the configuration is loaded).
func (p *Policy) Pending(registry string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.configured {
		return true
	}
	rp, ok := p.registries[registry]
	return ok && !rp.handedOver
}

// HoldsDelete reports whether an object nobody wants must be kept for now: the configuration
// is not loaded, a registry it names is pending, or it names none and some registry is
// pending. Registries no longer configured do not hold anything.
func (p *Policy) HoldsDelete(labels, annotations map[string]string) bool {
	names := v1alpha1.Registries(labels, annotations)
	if len(names) == 0 {
		return !p.DeletesSafe()
	}
	for _, name := range names {
		if p.Pending(name) {
			return true
		}
	}
	return false
}

// DeletesSafe reports whether the registries are known and every one's state has been
// handed over.
func (p *Policy) DeletesSafe() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.configured {
		return false
	}
	for _, rp := range p.registries {
		if !rp.handedOver {
			return false
		}
	}
	return true
}

// state reports whether the configuration is loaded and which registries are pending.
func (p *Policy) state() (configured bool, pending []string) {
	return p.isConfigured(), p.PendingRegistries()
}

func (p *Policy) isConfigured() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.configured
}

// PendingRegistries returns the configured registries whose state has not been handed over.
func (p *Policy) PendingRegistries() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for name, rp := range p.registries {
		if !rp.handedOver {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Registries returns the configured registries' names, sorted.
func (p *Policy) Registries() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.registries))
}
