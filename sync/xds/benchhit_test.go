package xds

import (
	"strings"
	"testing"
	"time"
)

func TestBenchHitLinesRoundTrip(t *testing.T) {
	want := hit{stream: 9876, version: "a1b2c3", at: time.Unix(0, 1764772000123456789)}
	got, ok := parseHit(strings.TrimSuffix(string(appendHit(nil, want)), "\n"))
	if !ok || got.stream != want.stream || got.version != want.version || !got.at.Equal(want.at) {
		t.Fatalf("parseHit(appendHit(%+v)) = %+v, %v", want, got, ok)
	}
	for _, line := range []string{"", "=== RUN   TestBenchClientProcess", "12 v1", "x v1 5", "12 v1 y"} {
		if h, ok := parseHit(line); ok {
			t.Errorf("parseHit(%q) = %+v, want not a hit", line, h)
		}
	}
}
