package kube

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

type metrics struct {
	writes         *prometheus.CounterVec   // verb, kind
	writeSeconds   *prometheus.HistogramVec // verb, kind
	reads          *prometheus.CounterVec   // kind
	noops          *prometheus.CounterVec   // kind
	errors         *prometheus.CounterVec   // kind
	conflicts      *prometheus.CounterVec   // kind
	refused        *prometheus.CounterVec   // kind, reason
	queueDepth     prometheus.Gauge
	pendingDeletes prometheus.Gauge
	nameConflicts  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_writes_total",
			Help: "Successful writes to the Kubernetes API by the owned-object reconciler (verb apply or delete).",
		}, []string{"verb", "kind"}),
		writeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "meltemi_sync_write_seconds",
			Help: "Duration of the reconciler's API writes (verb apply or delete), failed ones included: the API server's share of a change's way into the cluster.",
			// 1 ms to ~16 s: an idle API server answers an apply in milliseconds, an
			// overloaded or starting one in seconds (writes time out at 30 s).
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"verb", "kind"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_reads_total",
			Help: "Owned objects read whole from the API server: their cached content digest differs from the desired one, and only the whole object tells a server default from drift (rare: after a restart, once per such object).",
		}, []string{"kind"}),
		noops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_noop_total",
			Help: "Reconciliations that found the cluster already in the desired state and made no API call.",
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_errors_total",
			Help: "Failed writes and refused objects; failed writes are retried with exponential backoff.",
		}, []string{"kind"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_conflicts_total",
			Help: "Refusals to write a desired object whose name is taken by an object Meltemi does not own.",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meltemi_sync_refused_total",
			Help: "Desired objects refused without a write (reason too_large: JSON over the size limit).",
		}, []string{"kind", "reason"}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_sync_queue_depth",
			Help: "Objects waiting to be reconciled: queued, or waiting out a retry backoff after a failed write.",
		}),
		nameConflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_sync_name_conflicts",
			Help: "Desired objects not written because an object Meltemi does not own holds their name.",
		}),
		pendingDeletes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meltemi_sync_pending_deletes",
			Help: "Owned objects no longer desired, kept because not every source has delivered its first snapshot yet.",
		}),
	}
	for _, c := range []prometheus.Collector{m.writes, m.writeSeconds, m.reads, m.noops, m.errors, m.conflicts, m.refused, m.queueDepth, m.pendingDeletes, m.nameConflicts} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// queueMetrics is the workqueue's MetricsProvider. Besides exporting the queue depth it tracks
// the number of outstanding keys (queued or being processed) exactly: the workqueue calls its
// metrics under its own lock, once per key that becomes dirty (depth.Inc) and once per key that
// finishes processing (workDuration.Observe), so the counter is 0 only when nothing is queued
// and nothing is in flight. Keys waiting out a backoff are not outstanding.
type queueMetrics struct {
	depth       prometheus.Gauge
	outstanding atomic.Int64
}

type depthMetric struct{ q *queueMetrics }

func (d depthMetric) Inc() { d.q.outstanding.Add(1); d.q.depth.Inc() }
func (d depthMetric) Dec() { d.q.depth.Dec() }

type doneMetric struct{ q *queueMetrics }

func (d doneMetric) Observe(float64) { d.q.outstanding.Add(-1) }

type noopMetric struct{}

func (noopMetric) Inc()            {}
func (noopMetric) Dec()            {}
func (noopMetric) Set(float64)     {}
func (noopMetric) Observe(float64) {}

func (q *queueMetrics) NewDepthMetric(string) workqueue.GaugeMetric            { return depthMetric{q} }
func (q *queueMetrics) NewAddsMetric(string) workqueue.CounterMetric           { return noopMetric{} }
func (q *queueMetrics) NewLatencyMetric(string) workqueue.HistogramMetric      { return noopMetric{} }
func (q *queueMetrics) NewWorkDurationMetric(string) workqueue.HistogramMetric { return doneMetric{q} }
func (q *queueMetrics) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noopMetric{}
}
func (q *queueMetrics) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noopMetric{}
}
func (q *queueMetrics) NewRetriesMetric(string) workqueue.CounterMetric { return noopMetric{} }
