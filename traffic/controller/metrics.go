package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/traffic"
)

type metrics struct {
	translations prometheus.Counter
	panics       prometheus.Counter
	duration     prometheus.Histogram
	routes       prometheus.Gauge
	envoyFilters prometheus.Gauge
	problems     *prometheus.GaugeVec // severity
	unresolved   prometheus.Gauge
	statusWrites *prometheus.CounterVec // result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		translations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_traffic_translations_total",
			Help: "Translations of routing rules into EnvoyFilters and route configurations.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_traffic_translation_panics_total",
			Help: "Translations that panicked (a bug); the previous result stays in place.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meltemi_traffic_translation_seconds",
			Help:    "Time to read the caches, translate and hand the result over.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms .. ~8 s
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_traffic_routes",
			Help: "Route configurations produced by the last translation.",
		}),
		envoyFilters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_traffic_envoyfilters",
			Help: "EnvoyFilters produced by the last translation.",
		}),
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_traffic_unresolved_destinations",
			Help: "Clusters that MetaRouter routes send traffic to but that do not exist (no such host, port or subset): requests routed there fail. Alert on it as an error.",
		}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_traffic_problems",
			Help: "Problems with routing rules and services found by the last translation, by severity (Error: left out; Warning: applied).",
		}, []string{"severity"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_traffic_status_writes_total",
			Help: "MetaRouter status writes, by result (ok or error).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.translations, m.panics, m.duration, m.routes, m.envoyFilters, m.problems, m.unresolved, m.statusWrites} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(took time.Duration, routes, envoyFilters, unresolved int, problems []traffic.Problem) {
	m.translations.Inc()
	m.unresolved.Set(float64(unresolved))
	m.duration.Observe(took.Seconds())
	m.routes.Set(float64(routes))
	m.envoyFilters.Set(float64(envoyFilters))
	counts := map[traffic.Severity]int{traffic.SeverityError: 0, traffic.SeverityWarning: 0}
	for _, p := range problems {
		counts[p.Severity]++
	}
	for sev, n := range counts {
		m.problems.WithLabelValues(string(sev)).Set(float64(n))
	}
}
