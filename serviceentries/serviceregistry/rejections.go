package serviceregistry

import (
	"hash/fnv"
	"slices"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// keepRejections is how many of a registry's newest rejections are kept as examples for status.
const keepRejections = 20

// maxDistinctRejections bounds the memory of rejections seen per registry (8 bytes each); past
// it, the memory starts over and rejections still sent are counted once more.
const maxDistinctRejections = 100000

// Rejections is the account of one registry's rejected items: each distinct item and reason
// counts once, however often a plugin sends it again (every snapshot, restart or session).
type Rejections struct {
	Total  int                 // distinct rejections seen
	Latest []catalog.Rejection // the newest, oldest first, at most keepRejections
}

// rejectionLog keeps the Rejections of every registry.
type rejectionLog struct {
	mu   sync.Mutex
	regs map[string]*registryRejections
}

type registryRejections struct {
	seen map[uint64]struct{} // hash of item and reason
	Rejections
}

// add records r and reports whether it is new.
func (l *rejectionLog) add(r catalog.Rejection) bool {
	h := fnv.New64a()
	h.Write([]byte(r.Item))
	h.Write([]byte{0})
	h.Write([]byte(r.Reason))
	key := h.Sum64()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.regs == nil {
		l.regs = map[string]*registryRejections{}
	}
	rr := l.regs[r.Registry]
	if rr == nil {
		rr = &registryRejections{seen: map[uint64]struct{}{}}
		l.regs[r.Registry] = rr
	}
	if _, ok := rr.seen[key]; ok {
		return false
	}
	if len(rr.seen) >= maxDistinctRejections {
		clear(rr.seen)
	}
	rr.seen[key] = struct{}{}
	rr.Total++
	rr.Latest = append(rr.Latest, r)
	if len(rr.Latest) > keepRejections {
		rr.Latest = slices.Delete(rr.Latest, 0, len(rr.Latest)-keepRejections)
	}
	return true
}

func (l *rejectionLog) get(registry string) Rejections {
	l.mu.Lock()
	defer l.mu.Unlock()
	rr := l.regs[registry]
	if rr == nil {
		return Rejections{}
	}
	return Rejections{Total: rr.Total, Latest: slices.Clone(rr.Latest)}
}

func (l *rejectionLog) forget(registry string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.regs, registry)
}
