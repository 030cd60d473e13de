package xds

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
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
// concurrent xDS streams (N = MELTEMI_BENCH_STREAMS, default 1000), each on its own gRPC
// connection over loopback TCP as each proxy has its own, subscribed to one of K names. Every
// Update changes all K names; each iteration makes U Updates (MELTEMI_BENCH_UPDATES, default
// 20) and waits for every stream to receive and ACK each. Reported: p50-ms, p99-ms and max-ms of
// the N×U latencies (goal p99 <= 500 ms), and cpu-ms/update, the process CPU per Update. Server
// and clients share the machine's cores, so the clients' decoding competes with the server.
// Run with -benchtime=1x.
func BenchmarkPushLatency(b *testing.B) {
	streams := envInt(b, "MELTEMI_BENCH_STREAMS", 1000)
	updates := envInt(b, "MELTEMI_BENCH_UPDATES", 20)
	for _, tc := range []struct {
		api   string
		names int
	}{
		{apiSotw, 100},
		{apiSotw, 1},
		{apiDelta, 100},
	} {
		b.Run(fmt.Sprintf("api=%s/names=%d/streams=%d", tc.api, tc.names, streams), func(b *testing.B) {
			benchPushLatency(b, tc.api, tc.names, streams, updates)
		})
	}
}

func benchPushLatency(b *testing.B, api string, names, streams, updates int) {
	srv := startServer(b, nil)
	srv.Update(benchRoutes(names, 0))
	hits := make(chan hit, 4*streams)
	nameOf := func(i int) string { return fmt.Sprintf("svc-%04d.dubbo_20880", i%names) }
	for i := range streams {
		conn := dial(b, srv.addr, nil)
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		if api == apiSotw {
			go sotwBenchClient(ctx, b, conn, i, nameOf(i), hits)
		} else {
			go deltaBenchClient(ctx, b, conn, i, nameOf(i), hits)
		}
	}
	// Every stream holds round 0 before measuring.
	collect(b, hits, srv, streams, nameOf)

	rounds := make([]map[string]*routev3.RouteConfiguration, b.N*updates)
	for i := range rounds {
		rounds[i] = benchRoutes(names, i+1)
	}
	var lat []time.Duration
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for _, desired := range rounds {
		start := time.Now()
		srv.Update(desired)
		for _, at := range collect(b, hits, srv, streams, nameOf) {
			lat = append(lat, at.Sub(start))
		}
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[(len(lat)*99+99)/100-1]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(float64(len(lat))/float64(b.N), "deliveries/op")
	b.ReportMetric(ms(cpu)/float64(len(rounds)), "cpu-ms/update")
	b.Logf("%s, %d names, %d streams, %d updates: p50 %v p99 %v max %v; process CPU (server and clients) %v per update",
		api, names, streams, len(rounds), lat[len(lat)/2], lat[(len(lat)*99+99)/100-1], lat[len(lat)-1],
		cpu/time.Duration(len(rounds)))
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
	timeout := time.After(30 * time.Second)
	for left > 0 {
		select {
		case h := <-hits:
			if h.version == want[h.stream] && got[h.stream].IsZero() {
				got[h.stream] = h.at
				left--
			}
		case <-timeout:
			b.Fatalf("%d of %d streams did not receive the update within 30s", left, streams)
		}
	}
	return got
}

// benchClient plays a proxy on one stream: it sends req, then for every response reports the
// versions it carries and sends the acknowledgement handle returns. handle decodes the route
// configurations, as a proxy does.
func benchClient[Req, Resp any](b *testing.B, stream grpc.BidiStreamingClient[Req, Resp], err error, i int, req *Req,
	hits chan<- hit, handle func(*Resp) ([]string, *Req, error)) {
	if err != nil {
		b.Error(err)
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
			b.Error(err)
			return
		}
		for _, v := range versions {
			hits <- hit{i, v, at}
		}
		req = ack
	}
}

func sotwBenchClient(ctx context.Context, b *testing.B, conn *grpc.ClientConn, i int, name string, hits chan<- hit) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	first := &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{name}}
	benchClient(b, stream, err, i, first, hits, func(resp *discoveryv3.DiscoveryResponse) ([]string, *discoveryv3.DiscoveryRequest, error) {
		for _, a := range resp.GetResources() {
			if err := a.UnmarshalTo(&routev3.RouteConfiguration{}); err != nil {
				return nil, nil, err
			}
		}
		return []string{resp.GetVersionInfo()}, &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{name},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}, nil
	})
}

func deltaBenchClient(ctx context.Context, b *testing.B, conn *grpc.ClientConn, i int, name string, hits chan<- hit) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	first := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: RouteType, ResourceNamesSubscribe: []string{name}}
	benchClient(b, stream, err, i, first, hits, func(resp *discoveryv3.DeltaDiscoveryResponse) ([]string, *discoveryv3.DeltaDiscoveryRequest, error) {
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
