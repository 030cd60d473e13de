package xds

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/internal/procstat"
)

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchRoutes is a desired set of n route configurations; round changes every one of them.
func benchRoutes(n, round int) map[string]*routev3.RouteConfiguration {
	out := make(map[string]*routev3.RouteConfiguration, n)
	for i := range n {
		name := fmt.Sprintf("svc-%04d.dubbo_20880", i)
		out[name] = routeConfig(name, fmt.Sprintf("outbound|20880|r%d|svc-%04d.dubbo", round, i))
	}
	return out
}

// hit is a stream receiving a version.
type hit struct {
	stream  int
	version string
	at      time.Time
}

// BenchmarkPushLatency measures the time from an Update to the new route received by N
// concurrent xDS streams, each on its own gRPC connection over loopback TCP as each proxy has
// its own, subscribed to one of K names: 1,000 streams (MELTEMI_BENCH_STREAMS) in three
// variants, and 10,000 (MELTEMI_BENCH_STREAMS_LARGE) with SotW. Every Update changes all K
// names; each iteration makes U Updates (MELTEMI_BENCH_UPDATES, default 20) and waits for every
// stream to receive and ACK each. The clients run in a process of their own (this test binary,
// see TestBenchClientProcess), so the server's CPU and memory are measured alone; both share the
// machine's cores. Reported: p50-ms, p99-ms and max-ms of the N×U latencies, the server
// process's CPU per Update (server-cpu-ms/update), and the server's heap and goroutine stacks
// per connected stream (server-KiB/stream). Run with -benchtime=1x.
func BenchmarkPushLatency(b *testing.B) {
	streams := envInt(b, "MELTEMI_BENCH_STREAMS", 1000)
	large := envInt(b, "MELTEMI_BENCH_STREAMS_LARGE", 10000)
	updates := envInt(b, "MELTEMI_BENCH_UPDATES", 20)
	for _, tc := range []struct {
		api            string
		names, streams int
	}{
		{apiSotw, 100, streams},
		{apiSotw, 1, streams},
		{apiDelta, 100, streams},
		{apiSotw, 100, large},
	} {
		b.Run(fmt.Sprintf("streams=%d/api=%s/names=%d", tc.streams, tc.api, tc.names), func(b *testing.B) {
			benchPushLatency(b, tc.api, tc.names, tc.streams, updates)
		})
	}
}

func benchNameOf(names int) func(int) string {
	return func(i int) string { return fmt.Sprintf("svc-%04d.dubbo_20880", i%names) }
}

func benchPushLatency(b *testing.B, api string, names, streams, updates int) {
	srv := startServer(b, nil)
	srv.Update(benchRoutes(names, 0))
	nameOf := benchNameOf(names)
	heap0 := serverMemory()
	hits, clients := startBenchClients(b, srv.addr, api, names, streams)
	// Every stream holds round 0 before measuring.
	collect(b, hits, srv, streams, nameOf)
	perStream := float64(serverMemory()-heap0) / float64(streams) / 1024

	rounds := make([]map[string]*routev3.RouteConfiguration, b.N*updates)
	for i := range rounds {
		rounds[i] = benchRoutes(names, i+1)
	}
	var lat []time.Duration
	cpu0, clientCPU0 := cpuTime(b), processCPU(b, clients)
	b.ResetTimer()
	for _, desired := range rounds {
		start := time.Now()
		srv.Update(desired)
		for _, at := range collect(b, hits, srv, streams, nameOf) {
			lat = append(lat, at.Sub(start))
		}
	}
	b.StopTimer()
	cpu, clientCPU := cpuTime(b)-cpu0, processCPU(b, clients)-clientCPU0
	ms := benchstat.Ms
	p50, p99, maxLat := benchstat.Quantile(lat, 0.5), benchstat.Quantile(lat, 0.99), benchstat.Max(lat)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(maxLat), "max-ms")
	b.ReportMetric(float64(len(lat))/float64(b.N), "deliveries/op")
	b.ReportMetric(ms(cpu)/float64(len(rounds)), "server-cpu-ms/update")
	b.ReportMetric(ms(clientCPU)/float64(len(rounds)), "client-cpu-ms/update")
	b.ReportMetric(perStream, "server-KiB/stream")
	b.Logf("%s, %d names, %d streams, %d updates: p50 %v p99 %v max %v; server CPU %v per update, %.1f KiB per stream",
		api, names, streams, len(rounds), p50, p99, maxLat,
		cpu/time.Duration(len(rounds)), perStream)
}

// serverMemory is the live heap and goroutine stacks of this process after a collection: with
// the clients elsewhere, what the server holds.
func serverMemory() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// cpuTime is the CPU time used by this process so far. Reported beside the latencies because
// it does not depend on what else runs on the machine.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU is the CPU time another process has used so far.
func processCPU(b *testing.B, pid int) time.Duration {
	cpu, err := procstat.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

// collect waits until every stream has received the version now served for its name and
// returns when each received it. Older versions still arriving are skipped.
func collect(b *testing.B, hits <-chan hit, srv *testServer, streams int, nameOf func(int) string) []time.Time {
	snap := srv.current()
	want := make([]string, streams)
	for i := range want {
		want[i] = snap[nameOf(i)].version
	}
	got := make([]time.Time, streams)
	left := streams
	timeout := time.After(60 * time.Second)
	for left > 0 {
		select {
		case h, ok := <-hits:
			if !ok {
				b.Fatalf("the client process ended with %d of %d streams waiting", left, streams)
			}
			if h.version == want[h.stream] && got[h.stream].IsZero() {
				got[h.stream] = h.at
				left--
			}
		case <-timeout:
			b.Fatalf("%d of %d streams did not receive the update within 60s", left, streams)
		}
	}
	return got
}

// benchClientEnv, set in the environment of this test binary, makes TestBenchClientProcess
// the client side of BenchmarkPushLatency: "addr api names streams".
const benchClientEnv = "MELTEMI_XDS_BENCH_CLIENTS"

// startBenchClients runs the streams in a child process (this test binary running
// TestBenchClientProcess) and returns what they receive: one line per stream and version,
// "stream version unix-nanoseconds", read from its output, and the child's pid.
func startBenchClients(b *testing.B, addr, api string, names, streams int) (<-chan hit, int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBenchClientProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d", benchClientEnv, addr, api, names, streams))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	hits := make(chan hit, 4*streams)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(hits)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if h, ok := parseHit(sc.Text()); ok {
				hits <- h
			} // else one of the test framework's own lines
		}
	}()
	b.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-done
		if b.Failed() {
			b.Logf("client process: %s", stderr.String())
		}
	})
	return hits, cmd.Process.Pid
}

// appendHit writes h as the line parseHit reads.
func appendHit(line []byte, h hit) []byte {
	line = strconv.AppendInt(line, int64(h.stream), 10)
	line = append(append(append(line, ' '), h.version...), ' ')
	return append(strconv.AppendInt(line, h.at.UnixNano(), 10), '\n')
}

// parseHit reads a "stream version unix-nanoseconds" line. It runs in the server's process for
// every delivery, so it avoids fmt's scanning, which would be a large part of the CPU measured
// as the server's at 10,000 streams.
func parseHit(line string) (hit, bool) {
	streamField, rest, ok1 := strings.Cut(line, " ")
	version, nanosField, ok2 := strings.Cut(rest, " ")
	stream, err1 := strconv.Atoi(streamField)
	nanos, err2 := strconv.ParseInt(nanosField, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return hit{}, false
	}
	return hit{stream: stream, version: version, at: time.Unix(0, nanos)}, true
}

// TestBenchClientProcess is the client side of BenchmarkPushLatency, run by it in a child
// process; it does nothing otherwise. It plays one proxy per stream until killed.
func TestBenchClientProcess(t *testing.T) {
	spec := os.Getenv(benchClientEnv)
	if spec == "" {
		t.Skip("the client process of BenchmarkPushLatency")
	}
	var addr, api string
	var names, streams int
	if _, err := fmt.Sscanf(spec, "%s %s %d %d", &addr, &api, &names, &streams); err != nil {
		t.Fatalf("%s=%q: %v", benchClientEnv, spec, err)
	}
	hits := make(chan hit, 4*streams)
	nameOf := benchNameOf(names)
	ctx := context.Background()
	for i := range streams {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy's default HTTP/2 windows (16 MiB per stream, 24 MiB per connection); fixed
			// windows also keep gRPC's bandwidth probing, which Envoy does not do, out of it.
			grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(24<<20))
		if err != nil {
			t.Fatal(err)
		}
		if api == apiSotw {
			go sotwBenchClient(ctx, t, conn, i, nameOf(i), hits)
		} else {
			go deltaBenchClient(ctx, t, conn, i, nameOf(i), hits)
		}
	}
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	var line []byte
	for h := range hits {
		line = appendHit(line[:0], h)
		if _, err := w.Write(line); err != nil {
			return
		}
		if len(hits) == 0 {
			if err := w.Flush(); err != nil {
				return // the benchmark is over
			}
		}
	}
}

// benchClient plays a proxy on one stream: it sends req, then for every response reports the
// versions it carries and sends the acknowledgement handle returns. handle decodes the route
// configurations, as a proxy does.
func benchClient[Req, Resp any](t testing.TB, stream grpc.BidiStreamingClient[Req, Resp], err error, i int, req *Req,
	hits chan<- hit, handle func(*Resp) ([]string, *Req, error)) {
	if err != nil {
		t.Error(err)
		return
	}
	for {
		if err := stream.Send(req); err != nil {
			return
		}
		resp, err := stream.Recv()
		if err != nil {
			return // the benchmark is over
		}
		at := time.Now()
		versions, ack, err := handle(resp)
		if err != nil {
			t.Error(err)
			return
		}
		for _, v := range versions {
			hits <- hit{i, v, at}
		}
		req = ack
	}
}

func sotwBenchClient(ctx context.Context, t testing.TB, conn *grpc.ClientConn, i int, name string, hits chan<- hit) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	first := &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{name}}
	benchClient(t, stream, err, i, first, hits, func(resp *discoveryv3.DiscoveryResponse) ([]string, *discoveryv3.DiscoveryRequest, error) {
		for _, a := range resp.GetResources() {
			if err := a.UnmarshalTo(&routev3.RouteConfiguration{}); err != nil {
				return nil, nil, err
			}
		}
		return []string{resp.GetVersionInfo()}, &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{name},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}, nil
	})
}

func deltaBenchClient(ctx context.Context, t testing.TB, conn *grpc.ClientConn, i int, name string, hits chan<- hit) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	first := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: RouteType, ResourceNamesSubscribe: []string{name}}
	benchClient(t, stream, err, i, first, hits, func(resp *discoveryv3.DeltaDiscoveryResponse) ([]string, *discoveryv3.DeltaDiscoveryRequest, error) {
		var versions []string
		for _, r := range resp.GetResources() {
			if err := r.GetResource().UnmarshalTo(&routev3.RouteConfiguration{}); err != nil {
				return nil, nil, err
			}
			versions = append(versions, r.GetVersion())
		}
		return versions, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: RouteType, ResponseNonce: resp.GetNonce()}, nil
	})
}

// BenchmarkUpdate measures Update with 1,000 route configurations (MELTEMI_BENCH_RESOURCES):
// changed (every resource differs from the previous Update: validate, marshal, hash, publish)
// and unchanged (the same content again: no push).
func BenchmarkUpdate(b *testing.B) {
	n := envInt(b, "MELTEMI_BENCH_RESOURCES", 1000)
	sets := [2]map[string]*routev3.RouteConfiguration{benchRoutes(n, 1), benchRoutes(n, 2)}
	for _, changed := range []bool{true, false} {
		b.Run(fmt.Sprintf("resources=%d/changed=%v", n, changed), func(b *testing.B) {
			s, err := New(Config{Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			s.Update(sets[0])
			b.ResetTimer()
			for i := range b.N {
				if changed {
					s.Update(sets[(i+1)%2])
				} else {
					s.Update(sets[0])
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/resource")
		})
	}
}
