package sdk

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Batching bounds one stream message: a busy registry fills batches, a quiet one sends each
// event as soon as it happens.
const (
	maxBatchEvents = 512
	maxBatchBytes  = 1 << 20
	// maxServiceBytes keeps a batch (at most maxBatchBytes plus one service) under the
	// host's message limit.
	maxServiceBytes = protocol.MaxMessageBytes / 2
)

type queued struct {
	ev   *registryv1.Event
	size int
}

// emitter implements Emitter for one Watch call: events are queued in order and sent in
// batches by run.
type emitter struct {
	ctx    context.Context
	srv    *server
	events chan queued
	done   chan struct{}
	once   sync.Once
}

func newEmitter(ctx context.Context, srv *server) *emitter {
	return &emitter{ctx: ctx, srv: srv, events: make(chan queued, 4*maxBatchEvents), done: make(chan struct{})}
}

// emit queues an event, blocking while the queue is full (back-pressure). Events emitted
// after the watch ended are dropped: nobody is listening any more.
func (e *emitter) emit(ev *registryv1.Event, size int) {
	select {
	case e.events <- queued{ev, size}:
	case <-e.done:
	case <-e.ctx.Done():
	}
}

func (e *emitter) stop() { e.once.Do(func() { close(e.done) }) }

// run sends batches until stop, then sends what is still queued. It returns early, without
// error, when the stream's context ends.
func (e *emitter) run(send func(*registryv1.WatchResponse) error) error {
	for {
		var first queued
		select {
		case first = <-e.events:
		case <-e.done:
			select {
			case first = <-e.events:
			default:
				return nil
			}
		case <-e.ctx.Done():
			return nil
		}
		batch, size := append(make([]*registryv1.Event, 0, 16), first.ev), first.size
	fill:
		for len(batch) < maxBatchEvents && size < maxBatchBytes {
			select {
			case q := <-e.events:
				batch, size = append(batch, q.ev), size+q.size
			default:
				break fill
			}
		}
		if err := send(&registryv1.WatchResponse{Events: batch}); err != nil {
			return err
		}
	}
}

var (
	snapshotBegin = &registryv1.Event{Kind: &registryv1.Event_SnapshotBegin{SnapshotBegin: &registryv1.SnapshotBegin{}}}
	snapshotEnd   = &registryv1.Event{Kind: &registryv1.Event_SnapshotEnd{SnapshotEnd: &registryv1.SnapshotEnd{}}}
)

func (e *emitter) Snapshot(services []Service) {
	e.emit(snapshotBegin, 2)
	for _, svc := range services {
		e.Upsert(svc)
	}
	e.emit(snapshotEnd, 2)
}

func (e *emitter) Upsert(svc Service) {
	ev := &registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: protocol.ToProto(svc)}}
	size := estimateSize(svc)
	if size > maxServiceBytes/4 {
		size = proto.Size(ev) // exact where it matters
	}
	if size > maxServiceBytes {
		// Sending it would break the stream for everyone; the host keeps what it knew.
		e.reject(svc.Key, svc.Key, fmt.Sprintf("service with %d instances is %d bytes encoded, more than the %d a message may carry", len(svc.Instances), size, maxServiceBytes))
		return
	}
	e.emit(ev, size)
}

func (e *emitter) Delete(key string) {
	ev := &registryv1.Event{Kind: &registryv1.Event_Delete{Delete: &registryv1.ServiceDelete{Key: key}}}
	e.emit(ev, len(key)+4)
}

func (e *emitter) Health(connected bool, message string) {
	message = e.srv.redact(message)
	e.srv.health.Store(&registryv1.HealthResponse{Connected: connected, Message: message})
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Health{Health: &registryv1.HealthStatus{Connected: connected, Message: message}}}, len(message)+4)
}

func (e *emitter) Reject(item, reason string) { e.reject(item, "", reason) }

func (e *emitter) reject(item, key, reason string) {
	r := &registryv1.Rejection{Item: e.srv.redact(item), Reason: e.srv.redact(reason), Key: key}
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Rejected{Rejected: r}}, len(r.Item)+len(r.Reason)+len(key)+8)
}

// estimateSize approximates a service's encoded size without encoding it, for batching: a
// few bytes of tags and lengths per field on top of the text.
func estimateSize(svc Service) int {
	n := len(svc.Key) + len(svc.Host) + 16 + labelsSize(svc.Labels)
	for _, in := range svc.Instances {
		n += len(in.Address) + len(in.Protocol) + len(in.Locality) + 24 + labelsSize(in.Labels)
	}
	return n
}

func labelsSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v) + 6
	}
	return n
}
