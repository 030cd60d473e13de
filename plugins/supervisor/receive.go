package supervisor

import (
	"log/slog"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// maxReported bounds the memory of rejections already reported; past it, the memory starts
// over (and rejections still present are reported once more).
const maxReported = 10000

// receiver applies one plugin's event stream to the sink: snapshots are collected and
// handed over whole, upserts are validated item by item, and rejections are reported once.
type receiver struct {
	registry string
	sink     Sink
	log      *slog.Logger
	metrics  *registryMetrics
	redact   *protocol.Redactor
	// status updates the supervisor's status (and the sink's copy of it).
	status func(func(*Status))

	inSnapshot bool
	pending    []catalog.Service
	keep       []string
	// reported remembers item -> reason of rejections reported since the last snapshot
	// began: a bad instance is sent again with every change of its service, but logged,
	// counted and reported once.
	reported map[string]string
}

func newReceiver(registry string, sink Sink, log *slog.Logger, m *registryMetrics, r *protocol.Redactor, status func(func(*Status))) *receiver {
	return &receiver{registry: registry, sink: sink, log: log, metrics: m, redact: r, status: status, reported: map[string]string{}}
}

// handle applies one event. Its service may be kept (the sink takes it).
func (r *receiver) handle(ev *protocol.Event) {
	switch ev.Kind {
	case protocol.KindSnapshotBegin:
		r.metrics.snapshots.Inc()
		r.inSnapshot, r.pending, r.keep = true, r.pending[:0], nil
		clear(r.reported)
	case protocol.KindUpsert:
		r.metrics.upserts.Inc()
		svc, ok := r.validate(ev.Service)
		switch {
		case r.inSnapshot && ok:
			r.pending = append(r.pending, svc)
		case r.inSnapshot:
			// Unusable this time: whatever was known of it stays.
			r.keep = append(r.keep, ev.Service.Key)
		case ok:
			r.sink.Upsert(svc)
		}
	case protocol.KindDelete:
		r.metrics.deletes.Inc()
		if r.inSnapshot {
			r.dropPending(ev.Key)
		} else {
			r.sink.Delete(r.registry, ev.Key)
		}
	case protocol.KindSnapshotEnd:
		if !r.inSnapshot {
			return
		}
		r.sink.Replace(r.registry, r.pending, r.keep)
		r.inSnapshot, r.pending, r.keep = false, nil, nil
		r.status(func(st *Status) { st.Synced, st.LastSync = true, time.Now() })
	case protocol.KindHealth:
		connected, msg := ev.Connected, r.redact.Redact(ev.Message)
		if connected {
			msg = "" // Message is the last problem; a connected registry has none
		} else {
			r.log.Warn("registry unreachable; keeping its last-known services", "reason", msg)
		}
		r.status(func(st *Status) { st.Connected, st.Message = connected, msg })
	case protocol.KindRejected:
		if ev.Key != "" && r.inSnapshot {
			r.keep = append(r.keep, ev.Key)
		}
		r.reject(catalog.Rejection{Registry: r.registry, Item: ev.Item, Reason: ev.Reason})
	case protocol.KindMalformed:
		// Like a service the plugin could not send: what was known of it stays.
		item := "event"
		if ev.Key != "" {
			item = catalog.Clip(ev.Key, 256)
			if r.inSnapshot {
				r.keep = append(r.keep, ev.Key)
			}
		}
		r.reject(catalog.Rejection{Registry: r.registry, Item: item, Reason: "malformed event from the plugin: " + ev.Err.Error()})
	}
}

// dropPending forgets a service upserted earlier in the snapshot being received.
func (r *receiver) dropPending(key string) {
	out := r.pending[:0]
	for _, svc := range r.pending {
		if svc.Key != key {
			out = append(out, svc)
		}
	}
	r.pending = out
}

// validate checks one service. Unusable parts are rejected one by one: bad instances, and
// labels that cannot be Kubernetes labels. ok is false when the service as a whole is
// unusable.
func (r *receiver) validate(svc catalog.Service) (catalog.Service, bool) {
	svc.Registry = r.registry
	valid, rejections, ok := catalog.ValidateAll(svc)
	for _, rej := range rejections {
		r.reject(rej)
	}
	return valid, ok
}

// reject reports a rejection to the sink once per snapshot; the sink's first sight of it is
// counted and logged as a warning.
func (r *receiver) reject(rej catalog.Rejection) {
	rej.Item, rej.Reason = r.redact.Redact(rej.Item), r.redact.Redact(rej.Reason)
	if prev, seen := r.reported[rej.Item]; seen && prev == rej.Reason {
		return
	}
	if len(r.reported) >= maxReported {
		clear(r.reported)
	}
	r.reported[rej.Item] = rej.Reason
	if !r.sink.Reject(rej) {
		r.log.Debug("registry item still rejected", "item", rej.Item, "reason", rej.Reason)
		return
	}
	r.metrics.rejected.Inc()
	r.log.Warn("registry item rejected", "item", rej.Item, "reason", rej.Reason)
}
