package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	streams   *prometheus.GaugeVec   // api
	pushes    *prometheus.CounterVec // type, api
	nacks     *prometheus.CounterVec // type
	rejected  prometheus.Counter
	resources prometheus.Gauge
	push      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meltemi_xds_streams",
			Help: "Connected xDS streams (api sotw or delta).",
		}, []string{"api"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_xds_pushes_total",
			Help: "Discovery responses sent, by resource type and api (sotw, delta or fetch).",
		}, []string{"type", "api"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_xds_nacks_total",
			Help: "Discovery requests that rejected a response (NACK), by resource type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meltemi_xds_rejected_total",
			Help: "Route configurations refused by Update (invalid); the previous version, if any, is kept.",
		}),
		resources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_xds_resources",
			Help: "Route configurations currently served.",
		}),
		push: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meltemi_rule_change_to_push_seconds",
			Help:    "Time from the change behind an Update (a routing rule edit; the Update itself when no origin is known) to the response carrying it being sent on a stream.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5 ms .. ~8 s
		}),
	}
	for _, c := range []prometheus.Collector{m.streams, m.pushes, m.nacks, m.rejected, m.resources, m.push} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register xds metrics: %w", err)
		}
	}
	return m, nil
}
