package benchstat

import (
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	seq := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(n-i) * time.Millisecond // descending: Quantile must sort
		}
		return d
	}
	for _, tc := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{n: 100, p: 0.99, want: 99 * time.Millisecond},
		{n: 100, p: 0.5, want: 50 * time.Millisecond},
		{n: 200, p: 0.99, want: 198 * time.Millisecond},
		{n: 1000, p: 0.99, want: 990 * time.Millisecond},
		{n: 10, p: 0.99, want: 10 * time.Millisecond},
		{n: 1, p: 0.5, want: 1 * time.Millisecond},
		{n: 3, p: 1, want: 3 * time.Millisecond},
		{n: 0, p: 0.99, want: 0},
	} {
		d := seq(tc.n)
		if got := Quantile(d, tc.p); got != tc.want {
			t.Errorf("Quantile(1..%d ms, %v) = %v, want %v", tc.n, tc.p, got, tc.want)
		}
		if tc.n > 1 && d[0] != time.Duration(tc.n)*time.Millisecond {
			t.Errorf("Quantile reordered its input")
		}
	}
}

func TestMax(t *testing.T) {
	if got := Max([]time.Duration{3, 9, 1}); got != 9 {
		t.Errorf("Max = %v, want 9", got)
	}
	if got := Max(nil); got != 0 {
		t.Errorf("Max(nil) = %v, want 0", got)
	}
}
