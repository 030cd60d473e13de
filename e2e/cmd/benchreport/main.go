// Command benchreport turns `go test -bench` output into BENCHMARKS.md: the machine, the
// date, the command, every number, and each goal an issue set with the measured ratio to it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is one benchmark line.
type result struct {
	pkg     string
	name    string
	iters   int
	metrics []metric // in the order go test printed them
	// measured says when the numbers were taken: this run's time, or the date a kept row
	// carried in the previous report.
	measured string
}

type metric struct {
	value float64
	unit  string
}

func (r result) get(unit string) (float64, bool) {
	for _, m := range r.metrics {
		if m.unit == unit {
			return m.value, true
		}
	}
	return 0, false
}

// goal is a target an issue set for one benchmark number.
type goal struct {
	// pkg is the suffix of the benchmark's package, since names repeat across packages.
	pkg, bench, unit string
	what             string
	// atMost: the number must not exceed target (latency, memory, ratios); else at least.
	atMost bool
	target float64
}

// floors name the numbers a benchmark reports for the same path with Meltemi taken out, in
// the same run: "<prefix><unit>" is the floor of "<unit>" ("apiserver-floor-p99-ms" of
// "p99-ms"). The report shows it next to the goal's number, since no configuration of Meltemi
// can go below it.
var floors = []struct{ prefix, what string }{
	{"apiserver-floor-", "API server alone"},
	{"nacos-push-floor-", "the server's push to a plain subscriber"},
	{"nacos-query-floor-", "a plain client querying the server every 5 ms"},
}

// goals lists the targets; a goal whose benchmark did not run is reported as not measured.
var goals = []goal{
	{"/e2e", "BenchmarkHostInitialSync", "ratio-vs-create-loop", "initial sync (whole host) vs plain client-go create loop", true, 1.25},
	{"/e2e", "BenchmarkHostRestartUnchanged", "writes", "API writes after a restart with unchanged registries", true, 0},
	{"/e2e", "BenchmarkEventToWrite", "p99-ms", "registry event → ServiceEntry written, p99 (default write window, synthetic plugin)", true, 250},
	{"/e2e", "BenchmarkEventToWriteRegistry/registry=zookeeper/window=100ms", "p50-ms", "ZooKeeper change → ServiceEntry written, p50 (default write window)", true, 10},
	{"/e2e", "BenchmarkEventToWriteRegistry/registry=zookeeper/window=100ms", "p99-ms", "ZooKeeper change → ServiceEntry written, p99 (default write window)", true, 20},
	{"/e2e", "BenchmarkEventToWriteRegistry/registry=etcd/window=100ms", "p99-ms", "etcd change → ServiceEntry written, p99 (default write window)", true, 20},
	{"/e2e", "BenchmarkEventToWriteRegistry/registry=consul/window=100ms", "p99-ms", "Consul change → ServiceEntry written, p99 (default write window)", true, 20},
	{"/e2e", "BenchmarkHostMemory", "rss-MiB", "host RSS holding 100,000 instances", true, 256},
	{"/e2e", "BenchmarkWritesPerBurst", "writes-per-distinct-object", "writes per burst of changes within 100 ms / distinct objects changed (leading and trailing write)", true, 2},
	{"/plugins/supervisor", "BenchmarkStreamThroughput", "instance-events/s", "instance events/s through a real plugin stream", false, 200000},
	{"/sync/xds", "BenchmarkPushLatency/streams=1000", "p99-ms", "route update → received by 1,000 xDS streams, p99 (worst variant; translation measured separately)", true, 100},
	{"/sync/xds", "BenchmarkPushLatency/streams=10000", "p99-ms", "route update → received by 10,000 xDS streams, p99", true, 1000},
	{"/e2e", "BenchmarkOverload", "ratio-vs-floor", "overload (500 changes/s over 1,000 services): sustained writes/s vs a plain apply loop's", false, 0.9},
	{"/e2e", "BenchmarkOverload", "writes-per-distinct-change", "overload: writes / distinct (host, 100 ms window) changes", true, 1},
	{"/e2e", "BenchmarkOverload", "max-wait-over-round-robin-bound", "overload: longest wait of a change / round-robin bound (services ÷ floor rate)", true, 2},
	{"/e2e", "BenchmarkNacosToServiceEntry", "new-service-p99-ms", "a new Nacos service → ServiceEntry written, p99", true, 1500},
	{"/e2e", "BenchmarkNacosToServiceEntry", "register-p99-ms", "a Nacos instance change of a known service → ServiceEntry written, p99 (with the server's push)", true, 500},
	{"/e2e", "BenchmarkRegistryToSidecar/istiod-debounce=100ms", "p99-ms", "ZooKeeper change → a sidecar's EDS through real istiod, p99 (istiod's default debounce)", true, 150},
	{"/e2e", "BenchmarkIstiodCost", "meltemi-idle-pushes", "istiod pushes in 30 s without changes, Meltemi's ServiceEntries (worst size)", true, 0},
	{"/e2e", "BenchmarkAPIServerOutageRecovery", "recovery-s", "reliability: changes made during a kube-apiserver outage (30 s, 3 min) all written after it is ready again (worst)", true, 5},
	{"/e2e", "BenchmarkAPIServerOutageRecovery", "wrong-deletions", "reliability: ServiceEntries wrongly deleted through the outages", true, 0},
	{"/e2e", "BenchmarkAPIServerOutageRecovery", "lost-endpoints", "reliability: endpoints lost through the outages", true, 0},
	{"/e2e", "BenchmarkReliability/scenario=unsynced-registry-gc", "delete-after-start-s", "reliability: a healthy registry's removed service deleted after a restart, while another registry cannot sync", true, 5},
	{"/e2e", "BenchmarkReliability/scenario=foreign-conflicts", "reported-after-s", "reliability: a name and a host taken by foreign ServiceEntries reported (status, Events, metrics)", true, 5},
	{"/e2e", "BenchmarkIstiodCost", "cpu-ratio", "istiod CPU for Meltemi's ServiceEntries / the same written by a plain client (worst size)", true, 1.2},
	{"/e2e", "BenchmarkIstiodCost", "cold-cpu-ratio", "istiod CPU loading Meltemi's ServiceEntries at its start / the same written by a plain client (worst size)", true, 1.2},
}

func main() {
	in := flag.String("in", "-", "go test -bench output ('-' for stdin)")
	out := flag.String("out", "BENCHMARKS.md", "markdown file to write")
	command := flag.String("command", "make bench", "command that produced the results")
	notes := flag.String("notes", "", "markdown file appended as the report's notes (how to read the numbers)")
	keep := flag.String("keep", "", "previous report whose rows stay for the benchmarks this run did not measure (a run of a few benchmarks updates only theirs)")
	flag.Parse()
	now := time.Now()

	var r io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		r = f
	}
	results, cpu, err := parse(r)
	if err != nil {
		fail(err)
	}
	if len(results) == 0 {
		fail(fmt.Errorf("no benchmark results in the input"))
	}
	for i := range results {
		results[i].measured = now.UTC().Format(timeLayout)
	}
	if *keep != "" {
		f, err := os.Open(*keep)
		if err != nil {
			fail(err)
		}
		previous, err := parseReport(f)
		f.Close()
		if err != nil {
			fail(fmt.Errorf("%s: %w", *keep, err))
		}
		results = merge(previous, results)
	}
	f, err := os.Create(*out)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	render(f, results, cpu, *command, now)
	if *notes != "" {
		text, err := os.ReadFile(*notes)
		if err != nil {
			fail(err)
		}
		fmt.Fprintf(f, "\n%s", text)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchreport:", err)
	os.Exit(1)
}

func parse(r io.Reader) ([]result, string, error) {
	var (
		out     []result
		pkg     string
		cpu     string
		pending string // a benchmark whose numbers were pushed to a later line by its own logs
	)
	sc := lineScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg, pending = strings.TrimPrefix(line, "pkg: "), ""
		case strings.HasPrefix(line, "cpu: "):
			cpu = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "Benchmark"):
			fields := strings.Fields(line)
			if res, ok := parseNumbers(fields[0], fields[1:]); ok {
				res.pkg = pkg
				out, pending = append(out, res), ""
			} else {
				pending = fields[0]
			}
		case pending != "":
			// go test prints the name, then whatever the benchmark logged, then the numbers.
			if res, ok := parseNumbers(pending, strings.Fields(line)); ok {
				res.pkg = pkg
				out, pending = append(out, res), ""
			}
		}
	}
	return out, cpu, sc.Err()
}

// lineScanner reads lines of up to 1 MiB: benchmarks with many numbers, and their logs, make
// long lines.
func lineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return sc
}

// parseNumbers reads "<iterations> <value> <unit> ..." for the benchmark name.
func parseNumbers(name string, fields []string) (result, bool) {
	if len(fields) < 3 || len(fields)%2 != 1 {
		return result{}, false
	}
	iters, err := strconv.Atoi(fields[0])
	if err != nil {
		return result{}, false
	}
	res := result{name: trimProcs(name), iters: iters}
	for i := 1; i+1 < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return result{}, false
		}
		res.metrics = append(res.metrics, metric{v, fields[i+1]})
	}
	return res, true
}

// trimProcs drops the -GOMAXPROCS suffix go test appends.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

func render(w io.Writer, results []result, cpu, command string, now time.Time) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "# Benchmarks\n\n")
	fmt.Fprintf(w, "Written by `%s` on %s; each row of the results says when it was measured.\n\n", command, now.UTC().Format(timeLayout))
	fmt.Fprintf(w, "| machine | |\n|---|---|\n")
	fmt.Fprintf(w, "| cpu | %s |\n| cores | %d |\n| memory | %s |\n| os/arch | %s/%s |\n| go | %s |\n| host | %s |\n\n",
		orDash(cpu), runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, runtime.Version(), host)
	fmt.Fprintf(w, "Every server is real and runs on the same machine as the benchmark (kube-apiserver with etcd, ZooKeeper, Consul, Polaris for the Nacos protocol, etcd, and istiod for the benchmarks that name it): numbers include their cost and compete with them for the same cores.\n\n")

	fmt.Fprintf(w, "## Goals\n\n| goal | target | measured | ratio to target | met |\n|---|---|---|---|---|\n")
	for _, g := range goals {
		measured, from, ok := find(results, g)
		if !ok {
			fmt.Fprintf(w, "| %s | %s %s %s | not measured | | |\n", g.what, cmpWord(g.atMost), fmtNum(g.target), g.unit)
			continue
		}
		ratio := "—"
		if g.target != 0 {
			ratio = fmt.Sprintf("%.2f×", measured/g.target)
		}
		met := measured <= g.target
		if !g.atMost {
			met = measured >= g.target
		}
		shown := fmtNum(measured)
		for _, f := range floors {
			if floor, ok := from.get(f.prefix + g.unit); ok {
				shown += fmt.Sprintf(" (%s, same run: %s)", f.what, fmtNum(floor))
			}
		}
		fmt.Fprintf(w, "| %s | %s %s %s | %s | %s | %s |\n", g.what, cmpWord(g.atMost), fmtNum(g.target), g.unit, shown, ratio, yesNo(met))
	}

	fmt.Fprintf(w, "\n## All results\n")
	byPkg := map[string][]result{}
	var pkgs []string
	for _, r := range results {
		if _, ok := byPkg[r.pkg]; !ok {
			pkgs = append(pkgs, r.pkg)
		}
		byPkg[r.pkg] = append(byPkg[r.pkg], r)
	}
	slices.Sort(pkgs)
	for _, p := range pkgs {
		fmt.Fprintf(w, "\n### %s\n\n| benchmark | measured | iterations | numbers |\n|---|---|---|---|\n", orDash(p))
		for _, r := range byPkg[p] {
			var parts []string
			for _, m := range r.metrics {
				parts = append(parts, fmtNum(m.value)+" "+m.unit)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s |\n", strings.TrimPrefix(r.name, "Benchmark"), orDash(r.measured), r.iters, strings.Join(parts, ", "))
		}
	}
}

// find returns the goal's number; where sub-benchmarks report it several times (variants),
// the worst of them, so a goal is only met when every variant meets it. It also returns the
// result the number came from.
func find(results []result, g goal) (float64, result, bool) {
	var (
		worst float64
		from  result
	)
	found := false
	for _, r := range results {
		if !strings.HasSuffix(r.pkg, g.pkg) || r.name != g.bench && !strings.HasPrefix(r.name, g.bench+"/") {
			continue
		}
		v, ok := r.get(g.unit)
		if !ok {
			continue
		}
		if !found || (g.atMost && v > worst) || (!g.atMost && v < worst) {
			worst, from = v, r
		}
		found = true
	}
	return worst, from, found
}

func cmpWord(atMost bool) string {
	if atMost {
		return "≤"
	}
	return "≥"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func fmtNum(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "—"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
	}
	return "—"
}
