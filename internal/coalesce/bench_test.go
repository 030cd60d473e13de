package coalesce

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkLimitedTake measures one take of 32 keys (2 × the default 16 workers) from a queue
// holding N pending keys, the taken keys marked again (a steady overload, or an initial sync
// of N hosts): with the heap ordering, and with the earlier design that copied and sorted
// every pending key on each take (sort-baseline), in the same run.
func BenchmarkLimitedTake(b *testing.B) {
	const limit = 32
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("pending=%d/heap", n), func(b *testing.B) {
			q := New[int](time.Millisecond, time.Second)
			for k := range n {
				q.Add(k)
			}
			later := time.Now().Add(time.Hour)
			b.ReportAllocs()
			for b.Loop() {
				batch, _, _ := q.take(later, limit)
				for k := range batch {
					q.Add(k)
				}
			}
		})
		b.Run(fmt.Sprintf("pending=%d/sort-baseline", n), func(b *testing.B) {
			pending := map[int]change{}
			var seq uint64
			for k := range n {
				seq++
				pending[k] = change{seq: seq}
			}
			b.ReportAllocs()
			for b.Loop() {
				for _, k := range sortedTake(pending, limit) {
					seq++
					pending[k] = change{seq: seq}
				}
			}
		})
	}
}

// sortedTake is the earlier design's limited take: every pending key copied and sorted.
func sortedTake(pending map[int]change, limit int) []int {
	type candidate struct {
		key int
		change
	}
	cands := make([]candidate, 0, len(pending))
	for k, c := range pending {
		cands = append(cands, candidate{k, c})
	}
	slices.SortFunc(cands, func(a, b candidate) int { return cmp.Compare(a.seq, b.seq) })
	taken := make([]int, 0, limit)
	for _, c := range cands[:limit] {
		taken = append(taken, c.key)
		delete(pending, c.key)
	}
	return taken
}
