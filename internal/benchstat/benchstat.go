// Package benchstat holds the latency statistics every benchmark reports, so that a p99 means
// the same thing in every row of BENCHMARKS.md.
package benchstat

import (
	"slices"
	"time"
)

// Quantile returns the p-quantile (0 < p ≤ 1) of d by the nearest-rank method: the smallest
// sample with at least p of all samples at or below it, so the p99 of 100 samples is the
// 99th smallest, and the p99 of 1,000 the 990th. d is not modified; an empty d gives 0.
func Quantile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(float64(len(s))*p + 0.999999) // ceil, tolerant of p*n's rounding error
	return s[min(max(rank, 1), len(s))-1]
}

// Max returns the largest sample of d, 0 if d is empty.
func Max(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// Ms converts d to fractional milliseconds, the unit of every latency metric.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// QuantileMs is Quantile in milliseconds.
func QuantileMs(d []time.Duration, p float64) float64 { return Ms(Quantile(d, p)) }
