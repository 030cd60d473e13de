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
	got, from, ok := find(results, goal{pkg: "/sync/xds", bench: "BenchmarkPushLatency", unit: "p99-ms", atMost: true})
	if !ok || got != 620 || from.name != "BenchmarkPushLatency/api=delta" {
		t.Fatalf("worst variant = %v from %q, %v; want 620 from api=delta", got, from.name, ok)
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

func TestFloorShownFromTheWorstVariant(t *testing.T) {
	in := `pkg: example.com/m/e2e
BenchmarkEventToWriteRegistry/registry=etcd/window=100ms-2     1   1 ns/op   30 p99-ms   25 apiserver-floor-p99-ms
BenchmarkEventToWriteRegistry/registry=consul/window=100ms-2   1   1 ns/op   44 p99-ms   41 apiserver-floor-p99-ms
BenchmarkNacosToServiceEntry-2   40   1 ns/op   958 register-p99-ms   941 nacos-push-floor-register-p99-ms   902 nacos-query-floor-register-p99-ms
`
	results, _, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	render(&out, results, "", "make bench", time.Now())
	want := "| Consul change → ServiceEntry written, p99 (default write window) | ≤ 20 p99-ms | 44 (API server alone, same run: 41) | 2.20× | **no** |"
	if !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, out.String())
	}
	for _, want := range []string{
		"| etcd change → ServiceEntry written, p99 (default write window) | ≤ 20 p99-ms | 30 (API server alone, same run: 25) |",
		"| ≤ 500 register-p99-ms | 958 (the server's push to a plain subscriber, same run: 941) (a plain client querying the server every 5 ms, same run: 902) | 1.92× | **no** |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestKeepUpdatesOnlyTheRowsMeasuredAgain(t *testing.T) {
	old, _, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	for i := range old {
		old[i].measured = "2026-01-02 03:04 UTC"
	}
	var report bytes.Buffer
	render(&report, old, "", "make bench", time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC))
	previous, err := parseReport(&report)
	if err != nil {
		t.Fatal(err)
	}
	if len(previous) != 3 || previous[0].measured != "2026-01-02 03:04 UTC" || previous[2].pkg != "github.com/meltemi-mesh/meltemi/plugins/supervisor" {
		t.Fatalf("read back %+v", previous)
	}
	if v, ok := previous[0].get("ratio-vs-create-loop"); !ok || v != 1.2 {
		t.Fatalf("ratio read back as %v, %v", v, ok)
	}

	rerun, _, err := parse(strings.NewReader("pkg: github.com/meltemi-mesh/meltemi/e2e\n" +
		"BenchmarkHostRestartUnchanged-2\t1\t300000 ns/op\t2 writes\n" +
		"BenchmarkNew-2\t1\t5 ns/op\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range rerun {
		rerun[i].measured = "2026-02-01 00:00 UTC"
	}
	merged := merge(previous, rerun)
	var names []string
	for _, r := range merged {
		names = append(names, r.name+"@"+r.measured)
	}
	want := "BenchmarkHostInitialSync@2026-01-02 03:04 UTC BenchmarkHostRestartUnchanged@2026-02-01 00:00 UTC " +
		"BenchmarkStreamThroughput@2026-01-02 03:04 UTC BenchmarkNew@2026-02-01 00:00 UTC"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("merged\n %s\nwant\n %s", got, want)
	}
	if v, _ := merged[1].get("writes"); v != 2 {
		t.Fatalf("the re-run's number did not replace the old one: %v", v)
	}
}

func TestReportWithoutRowDatesKeepsTheReportDate(t *testing.T) {
	in := "Written by `make bench` on 2026-12-03 19:13 UTC.\n\n## All results\n\n### example.com/m/e2e\n\n" +
		"| benchmark | iterations | numbers |\n|---|---|---|\n| HostMemory | 1 | 224 rss-MiB, 2.35 bytes-per-x |\n\n## How to read these numbers\n| not | a | row |\n"
	got, err := parseReport(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].name != "BenchmarkHostMemory" || got[0].measured != "by 2026-12-03 19:13 UTC" || len(got[0].metrics) != 2 {
		t.Fatalf("got %+v", got)
	}
}
