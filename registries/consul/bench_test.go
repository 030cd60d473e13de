package consul

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
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
	r := runPlugin(b, addr, map[string]string{"services": reg.pattern()}, nil)
	var key string
	r.rec.await(b, "snapshot", func(state map[string]sdk.Service) error {
		for k := range state {
			key = k
		}
		return hasAddresses(key, "10.90.0.1")(state)
	})

	// change makes one change and returns how long the plugin took to report it; changes are
	// spaced out so that each is measured alone.
	change := func(do func(), want ...string) time.Duration {
		b.StopTimer()
		time.Sleep(150 * time.Millisecond)
		b.StartTimer()
		start := time.Now()
		do()
		r.rec.await(b, "change", hasAddresses(key, want...))
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
	b.ReportMetric(float64(r.p.stats.queries.Load())/float64(4*b.N), "queries/change")
}

func reportPercentiles(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(d[len(d)/2]), name+"-p50-ms")
	b.ReportMetric(ms(d[min(len(d)-1, len(d)*99/100)]), name+"-p99-ms")
}
