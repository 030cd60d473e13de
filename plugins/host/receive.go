package host

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
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
	pending    []model.Service
	keep       []string
	// reported remembers item -> reason of rejections reported since the last snapshot
	// began: a bad instance is sent again with every change of its service, but logged,
	// counted and reported once.
	reported map[string]string
}

func newReceiver(registry string, sink Sink, log *slog.Logger, m *registryMetrics, r *protocol.Redactor, status func(func(*Status))) *receiver {
	return &receiver{registry: registry, sink: sink, log: log, metrics: m, redact: r, status: status, reported: map[string]string{}}
}

// handle applies one event.
func (r *receiver) handle(ev *registryv1.Event) {
	switch k := ev.GetKind().(type) {
	case *registryv1.Event_SnapshotBegin:
		r.metrics.snapshots.Inc()
		r.inSnapshot, r.pending, r.keep = true, r.pending[:0], nil
		clear(r.reported)
	case *registryv1.Event_Upsert:
		r.metrics.upserts.Inc()
		svc, ok := r.validate(k.Upsert)
		switch {
		case r.inSnapshot && ok:
			r.pending = append(r.pending, svc)
		case r.inSnapshot:
			// Unusable this time: whatever was known of it stays.
			r.keep = append(r.keep, k.Upsert.GetKey())
		case ok:
			r.sink.Upsert(svc)
		}
	case *registryv1.Event_Delete:
		r.metrics.deletes.Inc()
		if r.inSnapshot {
			r.dropPending(k.Delete.GetKey())
		} else {
			r.sink.Delete(r.registry, k.Delete.GetKey())
		}
	case *registryv1.Event_SnapshotEnd:
		if !r.inSnapshot {
			return
		}
		r.sink.Replace(r.registry, r.pending, r.keep)
		r.inSnapshot, r.pending, r.keep = false, nil, nil
		r.status(func(st *Status) { st.Synced, st.LastSync = true, time.Now() })
	case *registryv1.Event_Health:
		connected, msg := k.Health.GetConnected(), r.redact.Redact(k.Health.GetMessage())
		if connected {
			msg = "" // Message is the last problem; a connected registry has none
		} else {
			r.log.Warn("registry unreachable; keeping its last-known services", "reason", msg)
		}
		r.status(func(st *Status) { st.Connected, st.Message = connected, msg })
	case *registryv1.Event_Rejected:
		if key := k.Rejected.GetKey(); key != "" && r.inSnapshot {
			r.keep = append(r.keep, key)
		}
		r.reject(model.Rejection{Registry: r.registry, Item: k.Rejected.GetItem(), Reason: k.Rejected.GetReason()})
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

// validate converts and checks one service. Unusable parts are rejected one by one: bad
// instances, and labels that cannot be Kubernetes labels. ok is false when the service as a
// whole is unusable.
func (r *receiver) validate(p *registryv1.Service) (model.Service, bool) {
	svc := protocol.FromProto(r.registry, p)
	var dropped []model.Rejection
	svc.Labels = r.checkLabels(svc.Key, svc.Labels, &dropped)
	for i := range svc.Instances {
		in := &svc.Instances[i]
		if len(in.Labels) > 0 {
			in.Labels = r.checkLabels(fmt.Sprintf("%s/%s:%d", svc.Key, clip(in.Address, 64), in.Port), in.Labels, &dropped)
		}
	}
	valid, rejections, ok := model.Validate(svc)
	if ok {
		// Label problems matter only for a service that is used.
		rejections = append(rejections, dropped...)
	}
	for _, rej := range rejections {
		r.reject(rej)
	}
	return valid, ok
}

// checkLabels returns labels without the invalid ones, adding a rejection for each of those
// to dropped.
func (r *receiver) checkLabels(item string, labels map[string]string, dropped *[]model.Rejection) map[string]string {
	bad := invalidLabels(labels)
	if len(bad) == 0 {
		return labels
	}
	kept := make(map[string]string, len(labels))
	for k, v := range labels {
		if _, drop := bad[k]; !drop {
			kept[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(bad)) {
		*dropped = append(*dropped, model.Rejection{Registry: r.registry, Item: item + " label " + clip(k, 80), Reason: bad[k] + "; label dropped"})
	}
	return kept
}

// reject reports a rejection once per snapshot: log, metric and sink (status).
func (r *receiver) reject(rej model.Rejection) {
	rej.Item, rej.Reason = r.redact.Redact(rej.Item), r.redact.Redact(rej.Reason)
	if prev, seen := r.reported[rej.Item]; seen && prev == rej.Reason {
		return
	}
	if len(r.reported) >= maxReported {
		clear(r.reported)
	}
	r.reported[rej.Item] = rej.Reason
	r.metrics.rejected.Inc()
	r.log.Warn("registry item rejected", "item", rej.Item, "reason", rej.Reason)
	r.sink.Reject(rej)
}
