package serviceentries

import "github.com/prometheus/client_golang/prometheus"

// collector exports per-registry counts straight from the store at scrape time, so they are
// never stale and cost nothing between scrapes.
type collector struct {
	c          *Controller
	services   *prometheus.Desc
	instances  *prometheus.Desc
	withheld   *prometheus.Desc
	duplicates *prometheus.Desc
}

// RegisterMetrics registers the controller's metrics on reg.
func (c *Controller) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(&collector{
		c:         c,
		services:  prometheus.NewDesc("meltemi_registry_services", "Services a registry currently provides (last known state while it is down).", []string{"registry"}, nil),
		instances: prometheus.NewDesc("meltemi_registry_instances", "Instances a registry currently provides (last known state while it is down).", []string{"registry"}, nil),
		withheld:  prometheus.NewDesc("meltemi_hosts_withheld", "Hosts not written because ServiceEntries Meltemi does not own define them.", nil, nil),
		duplicates: prometheus.NewDesc("meltemi_hosts_duplicated",
			"Hosts defined by a Meltemi ServiceEntry and by ServiceEntries it does not own (Istio merges them).", nil, nil),
	})
}

func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.services
	ch <- m.instances
	ch <- m.withheld
	ch <- m.duplicates
}

func (m *collector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range m.c.policy.Registries() {
		services, instances := m.c.store.Counts(name)
		ch <- prometheus.MustNewConstMetric(m.services, prometheus.GaugeValue, float64(services), name)
		ch <- prometheus.MustNewConstMetric(m.instances, prometheus.GaugeValue, float64(instances), name)
	}
	m.c.mu.Lock()
	withheld, dupes := len(m.c.withheld), len(m.c.dupes)
	m.c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.withheld, prometheus.GaugeValue, float64(withheld))
	ch <- prometheus.MustNewConstMetric(m.duplicates, prometheus.GaugeValue, float64(dupes))
}
