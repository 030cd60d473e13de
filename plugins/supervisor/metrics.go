package supervisor

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

// Restart reasons, the values of meltemi_plugin_restarts_total's reason label.
const (
	ReasonStartFailed     = "start-failed"
	ReasonConfigureFailed = "configure-failed"
	ReasonExited          = "exited"
	ReasonHung            = "hung"
	ReasonStreamEnded     = "stream-ended"
)

// NewMetrics registers the plugin metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := newMetrics()
	reg.MustRegister(m.restarts, m.events, m.rejected, m.connected, m.synced, m.running, m.startSeconds)
	return m
}

func newMetrics() *Metrics {
	return &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_plugin_restarts_total", Help: "Registry plugin restarts, by why the previous run ended: start-failed, configure-failed, exited, hung, stream-ended.",
		}, []string{"registry", "reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_registry_events_total", Help: "Events received from registry plugins, by type.",
		}, []string{"registry", "type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_registry_rejected_items_total", Help: "Registry items rejected as invalid (by the plugin or the host); each distinct item and reason counts once, however often it is sent again.",
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
}

// registryMetrics are one registry's series, resolved once: the event path is hot.
type registryMetrics struct {
	m                           *Metrics
	registry                    string
	snapshots, upserts, deletes prometheus.Counter
	rejected                    prometheus.Counter
	connected, synced, running  prometheus.Gauge
}

func (m *Metrics) forRegistry(registry string) *registryMetrics {
	if m == nil {
		m = newMetrics() // unregistered: counts into the void
	}
	return &registryMetrics{
		m: m, registry: registry,
		snapshots: m.events.WithLabelValues(registry, "snapshot"),
		upserts:   m.events.WithLabelValues(registry, "upsert"),
		deletes:   m.events.WithLabelValues(registry, "delete"),
		rejected:  m.rejected.WithLabelValues(registry),
		connected: m.connected.WithLabelValues(registry),
		synced:    m.synced.WithLabelValues(registry),
		running:   m.running.WithLabelValues(registry),
	}
}

func (r *registryMetrics) setStatus(st Status) {
	r.connected.Set(b2f(st.Connected))
	r.synced.Set(b2f(st.Synced))
	r.running.Set(b2f(st.PluginRunning))
}

func (r *registryMetrics) restart(reason string) {
	r.m.restarts.WithLabelValues(r.registry, reason).Inc()
}

func (r *registryMetrics) started(seconds float64) { r.m.startSeconds.Observe(seconds) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
