package consul

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/internal/benchstat"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// BenchmarkChangeToUpsert measures, against the shared Consul server, the plugin's part of
// the way to a ServiceEntry: from a change in Consul to the plugin reporting the service.
//   - register-p50-ms / register-p99-ms: an instance registered or deregistered;
//   - health-p50-ms / health-p99-ms: an instance's TTL check turned critical or passing.
//
// e2e's BenchmarkConsulToServiceEntry measures the whole way, host and apiserver included.
func BenchmarkChangeToUpsert(b *testing.B) {
	addr := sharedConsul(b)
	reg := newRegistrar(b, addr, "")
	name := reg.name("bench")
	reg.register(api.AgentServiceRegistration{ID: name + "-base", Name: name, Address: "10.90.0.1", Port: 80})
	p, rec := runPlugin(b, addr, map[string]string{"services": reg.pattern()}, nil)
	var key string
	rec.WaitState(b, wait, "snapshot", func(s *sdktest.State) bool {
		for k := range s.Services {
			key = k
		}
		return sdktest.HasAddresses(key, "10.90.0.1")(s)
	})

	// change makes one change and returns how long the plugin took to report it; changes are
	// spaced out so that each is measured alone.
	change := func(do func(), want ...string) time.Duration {
		b.StopTimer()
		time.Sleep(150 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		do()
		rec.WaitState(b, wait, "change", sdktest.HasAddresses(key, want...))
		return time.Since(start)
	}
	var register, health []time.Duration
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("%s-%d", name, i)
		ip := fmt.Sprintf("10.90.%d.%d", 1+i/250, 1+i%250)
		register = append(register, change(func() {
			reg.register(api.AgentServiceRegistration{ID: id, Name: name, Address: ip, Port: 80})
		}, "10.90.0.1", ip))
		health = append(health, change(func() { reg.setCheck(id, api.HealthCritical) }, "10.90.0.1"))
		health = append(health, change(func() { reg.setCheck(id, api.HealthPassing) }, "10.90.0.1", ip))
		register = append(register, change(func() { reg.deregister(id) }, "10.90.0.1"))
	}
	b.StopTimer()
	reportPercentiles(b, "register", register)
	reportPercentiles(b, "health", health)
	b.ReportMetric(float64(p.stats.queries.Load())/float64(4*b.N), "queries/change")
}

func reportPercentiles(b *testing.B, name string, d []time.Duration) {
	b.ReportMetric(benchstat.QuantileMs(d, 0.5), name+"-p50-ms")
	b.ReportMetric(benchstat.QuantileMs(d, 0.99), name+"-p99-ms")
}

// BenchmarkInitialSnapshot measures, against the shared Consul server, how long the plugin
// takes from Watch to its first snapshot with N services (MELTEMI_BENCH_CONSUL_SERVICES,
// default 500) of 2 instances each, more services than maxWatches (64), and then what the
// watches cost while nothing changes:
//   - snapshot-ms: Watch called to snapshot sent;
//   - idle-queries/s: queries per second over 5 s without changes (watches taking turns).
func BenchmarkInitialSnapshot(b *testing.B) {
	addr := sharedConsul(b)
	n := 500
	if v := os.Getenv("MELTEMI_BENCH_CONSUL_SERVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("MELTEMI_BENCH_CONSUL_SERVICES=%q", v)
		}
	}
	reg := newRegistrar(b, addr, "")
	for i := range n {
		for node := range 2 {
			name := reg.name(fmt.Sprint("s", i))
			reg.registerExternal(reg.name(fmt.Sprint("node", node)), fmt.Sprintf("10.95.%d.%d", node, 1+i%250), nil,
				&api.AgentService{ID: name, Service: name, Port: 8000 + i})
		}
	}
	var snapshot, idle float64
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		p, rec := runPlugin(b, addr, map[string]string{"services": reg.pattern()}, nil)
		rec.WaitState(b, wait, "snapshot", func(s *sdktest.State) bool {
			return len(s.Services) == n
		})
		snapshot += float64(time.Since(start).Milliseconds())
		b.StopTimer()
		before := p.stats.queries.Load()
		time.Sleep(5 * time.Second)
		idle += float64(p.stats.queries.Load()-before) / 5
		rec.Stop()
		time.Sleep(2 * time.Second) // Consul counts closed connections out a little later
		b.StartTimer()
	}
	b.ReportMetric(snapshot/float64(b.N), "snapshot-ms")
	b.ReportMetric(idle/float64(b.N), "idle-queries/s")
}
