package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/meltemi-mesh/meltemi/e2e
cpu: Example CPU @ 2.00GHz
BenchmarkHostInitialSync-2   	       1	12000000000 ns/op	        12.0 reconciler-s	        10.0 create-loop-s	         1.20 ratio-vs-create-loop
BenchmarkHostRestartUnchanged-2	       1	  300000 ns/op	         0 writes
pkg: github.com/meltemi-mesh/meltemi/plugins/supervisor
BenchmarkStreamThroughput-2	       3	  1000 ns/op	    150000 instance-events/s
PASS
`

func TestReport(t *testing.T) {
	results, cpu, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || cpu != "Example CPU @ 2.00GHz" {
		t.Fatalf("parsed %d results, cpu %q", len(results), cpu)
	}
	if results[0].name != "BenchmarkHostInitialSync" || results[2].pkg != "github.com/meltemi-mesh/meltemi/plugins/supervisor" {
		t.Fatalf("names/packages wrong: %+v", results)
	}
	var out bytes.Buffer
	render(&out, results, cpu, "make bench", time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC))
	md := out.String()
	for _, want := range []string{
		"| initial sync (whole host) vs plain client-go create loop | ≤ 1.25 ratio-vs-create-loop | 1.20 | 0.96× | yes |",
		"| API writes after a restart with unchanged registries | ≤ 0 writes | 0 | — | yes |",
		"| instance events/s through a real plugin stream | ≥ 200000 instance-events/s | 150000 | 0.75× | **no** |",
		"not measured",
		"2026-01-02 03:04 UTC",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestGoalTakesTheWorstVariant(t *testing.T) {
	in := `pkg: example.com/m/sync/xds
BenchmarkPushLatency/api=sotw-2   1   1 ns/op   300 p99-ms
BenchmarkPushLatency/api=delta-2  1   1 ns/op   620 p99-ms
pkg: example.com/m/registries/nacos
BenchmarkPushLatency-2            1   1 ns/op   9999 p99-ms
`
	results, _, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got, ok := find(results, goal{pkg: "/sync/xds", bench: "BenchmarkPushLatency", unit: "p99-ms", atMost: true})
	if !ok || got != 620 {
		t.Fatalf("worst variant = %v, %v; want 620", got, ok)
	}
}

func TestNumbersAfterLogLines(t *testing.T) {
	in := "pkg: example.com/m/registries/zookeeper\n" +
		"BenchmarkWatchLatency-2   \t{\"@message\":\"listed ZooKeeper\"}\n" +
		"{\"@message\":\"more log\"}\n" +
		"     790\t   1314085 ns/op\t         1.461 p50-ms\t         4.223 p99-ms\n"
	results, _, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].name != "BenchmarkWatchLatency" || results[0].iters != 790 {
		t.Fatalf("got %+v", results)
	}
	if v, ok := results[0].get("p99-ms"); !ok || v != 4.223 {
		t.Fatalf("p99-ms = %v, %v", v, ok)
	}
}
