package nacos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/internal/procstat"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
)

// BenchmarkConvert converts one push of a Dubbo service with 1000 providers.
func BenchmarkConvert(b *testing.B) {
	const iface = "org.apache.dubbo.samples.GreetingService"
	d, _, _ := parseDubboName(nacostest.DubboProviders(iface, "1.0.0", "blue"))
	hosts := make([]nacosmodel.Instance, 1000)
	for i := range hosts {
		hosts[i] = nacosmodel.Instance{
			Ip: fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256), Port: 20880, Weight: 1, Healthy: true, Enable: true,
			Metadata: nacostest.DubboMetadata(iface, "greeter", "1.0.0", "blue"),
		}
	}
	conv := converter{defaultProtocol: defaultProtocol}
	id := serviceID{publicNamespace, defaultGroup, d.iface}
	b.ReportAllocs()
	for b.Loop() {
		if insts, rej := conv.convert(id, &d, hosts); len(insts) != len(hosts) || len(rej) > 0 {
			b.Fatalf("%d instances, %d rejections", len(insts), len(rej))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(len(hosts)), "µs/instance")
}

// BenchmarkNacosPushToUpsert measures, against the real Nacos-protocol server, the time from a
// registration with nacos-sdk-go to the plugin's Upsert (in process, no host): the server's
// push cadence plus the plugin's own work. Registrations alternate with deregistrations,
// each at a random point of the server's push cadence.
func BenchmarkNacosPushToUpsert(b *testing.B) {
	addr := nacosAddr(b)
	ns := uniqueName("bench")
	app := nacostest.NewApp(b, addr, ns)
	app.Register(nacostest.Instance("latency", "", "10.0.0.1", 8080, nil))
	_, rec := startPlugin(b, addr, map[string]string{"namespaces": ns})
	key := ns + "/" + defaultGroup + "/latency"
	rec.WaitState(b, time.Minute, "the service", sdktest.HasEndpoints(key, "10.0.0.1:8080"))

	latencies := make([]time.Duration, 0, 2*b.N)
	b.ResetTimer()
	for i := range b.N {
		p := nacostest.Instance("latency", "", fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250), 8080, nil)
		for _, step := range []struct {
			do   func(vo.RegisterInstanceParam)
			want []string
		}{
			{app.Register, []string{"10.0.0.1:8080", p.Ip + ":8080"}},
			{app.Deregister, []string{"10.0.0.1:8080"}},
		} {
			// The server pushes on a fixed cadence: start at a random point of it.
			b.StopTimer()
			time.Sleep(rand.N(time.Second))
			b.StartTimer()
			start := time.Now()
			step.do(p)
			rec.WaitState(b, time.Minute, strings.Join(step.want, ","), sdktest.HasEndpoints(key, step.want...))
			latencies = append(latencies, time.Since(start))
		}
	}
	b.StopTimer()
	b.ReportMetric(benchstat.QuantileMs(latencies, 0.5), "p50-ms")
	b.ReportMetric(benchstat.QuantileMs(latencies, 0.99), "p99-ms")
}

// BenchmarkServiceListing measures what one listing of the plugin costs the real
// Nacos-protocol server: MELTEMI_BENCH_NACOS_SERVICES services (default 1,000, one instance
// each) in one namespace and group, listed whole (pages of 500) as the plugin does every
// listInterval. Reports ms/listing, the server process's CPU per listing
// (server-cpu-ms/listing, from /proc) and the share of one core that listing at the default
// interval takes (server-core-%-at-default-interval).
func BenchmarkServiceListing(b *testing.B) {
	addr := nacosAddr(b)
	services := 1000
	if v := os.Getenv("MELTEMI_BENCH_NACOS_SERVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("MELTEMI_BENCH_NACOS_SERVICES=%q: want a positive integer", v)
		}
		services = n
	}
	pid := harness.Load(b).PID(harness.Polaris)
	ns := uniqueName("bench-list")
	app := nacostest.NewApp(b, addr, ns)
	registerServices(b, app, services)
	ctx := context.Background()
	awaitListed(b, app, ns, services)

	cpu0 := cpuOf(b, pid)
	b.ResetTimer()
	for range b.N {
		names, err := listGroup(ctx, app.INamingClient, ns, defaultGroup)
		if err != nil {
			b.Fatal(err)
		}
		if len(names) != services {
			b.Fatalf("listed %d services, want %d", len(names), services)
		}
	}
	b.StopTimer()
	cpu := cpuOf(b, pid) - cpu0
	perListing := benchstat.Ms(cpu) / float64(b.N)
	b.ReportMetric(benchstat.Ms(b.Elapsed())/float64(b.N), "ms/listing")
	b.ReportMetric(perListing, "server-cpu-ms/listing")
	b.ReportMetric(100*perListing/benchstat.Ms(defaultListInterval), "server-core-%-at-default-interval")
}

func cpuOf(b *testing.B, pid int) time.Duration {
	b.Helper()
	cpu, err := procstat.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}
