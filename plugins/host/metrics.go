package host

import "github.com/prometheus/client_golang/prometheus"

// Metrics of plugin supervision. A nil *Metrics is valid and records nothing.
type Metrics struct {
	restarts     *prometheus.CounterVec
	events       *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	connected    *prometheus.GaugeVec
	synced       *prometheus.GaugeVec
	running      *prometheus.GaugeVec
	startSeconds prometheus.Histogram
}

// NewMetrics registers the plugin metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_plugin_restarts_total", Help: "Registry plugin restarts after a crash, hang, failed start or ended stream.",
		}, []string{"registry"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_registry_events_total", Help: "Events received from registry plugins, by type.",
		}, []string{"registry", "type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_registry_rejected_items_total", Help: "Registry items rejected as invalid (by the plugin or the host).",
		}, []string{"registry"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_registry_connected", Help: "1 when the registry plugin reports a working registry connection.",
		}, []string{"registry"}),
		synced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_registry_synced", Help: "1 once the registry delivered a complete snapshot.",
		}, []string{"registry"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_plugin_running", Help: "1 while the registry's plugin process is running and configured.",
		}, []string{"registry"}),
		startSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meltemi_plugin_start_seconds", Help: "Time from spawning a plugin to a completed handshake.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	reg.MustRegister(m.restarts, m.events, m.rejected, m.connected, m.synced, m.running, m.startSeconds)
	return m
}

func (m *Metrics) setStatus(registry string, st Status) {
	if m == nil {
		return
	}
	m.connected.WithLabelValues(registry).Set(b2f(st.Connected))
	m.synced.WithLabelValues(registry).Set(b2f(st.Synced))
	m.running.WithLabelValues(registry).Set(b2f(st.PluginRunning))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *Metrics) restart(registry string) {
	if m != nil {
		m.restarts.WithLabelValues(registry).Inc()
	}
}

func (m *Metrics) event(registry, kind string) {
	if m != nil {
		m.events.WithLabelValues(registry, kind).Inc()
	}
}

func (m *Metrics) reject(registry string) {
	if m != nil {
		m.rejected.WithLabelValues(registry).Inc()
	}
}

func (m *Metrics) started(seconds float64) {
	if m != nil {
		m.startSeconds.Observe(seconds)
	}
}
