package serviceentries

import (
	"maps"
	"slices"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// Policy holds the rules that keep registry reports from deleting what they should not, as
// external-dns's plan.Policy decides which changes a plan may apply:
//   - keep last non-empty: a registry configured so never has a service emptied or removed
//     while the store still holds instances of it;
//   - safe deletes: objects nobody wants are deleted only once the registries are known and
//     each has delivered a complete snapshot, so an object whose registry has not reported yet
//     is never taken for an orphan.
type Policy struct {
	mu         sync.Mutex
	configured bool                      // the registry configuration has been loaded
	registries map[string]registryPolicy // by name
}

type registryPolicy struct {
	keepLastNonEmpty bool
	synced           bool
}

// Configure names every configured registry and takes its policy; a registry configured
// before keeps its synced state.
func (p *Policy) Configure(regs []supervisor.Registration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[string]registryPolicy, len(regs))
	for _, r := range regs {
		next[r.Name] = registryPolicy{keepLastNonEmpty: r.KeepLastNonEmpty, synced: p.registries[r.Name].synced}
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

// DeletesSafe reports whether the registries are known and every one has synced.
func (p *Policy) DeletesSafe() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.configured {
		return false
	}
	for _, rp := range p.registries {
		if !rp.synced {
			return false
		}
	}
	return true
}

// Registries returns the configured registries' names, sorted.
func (p *Policy) Registries() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.registries))
}
