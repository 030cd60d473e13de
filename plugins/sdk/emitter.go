package sdk

import (
	"context"
	"fmt"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Batching bounds one stream message: a busy registry fills batches, a quiet one sends each
// event as soon as it happens.
const (
	maxBatchEvents = 512
	maxBatchBytes  = 1 << 20
	// maxQueuedBatches full batches may wait for the stream before emitting blocks.
	maxQueuedBatches = 4
	// maxServiceBytes keeps a batch (at most maxBatchBytes plus one service) under the
	// host's message limit.
	maxServiceBytes = protocol.MaxMessageBytes / 2
)

// emitter implements Emitter for one Watch call. Events are encoded into the wire form at
// once, in the caller's goroutine, and appended to the batch being filled; run sends
// batches in order. Encoding early costs the plugin no conversion into generated messages
// and lets a busy plugin's goroutines encode while the stream sends.
type emitter struct {
	ctx context.Context
	srv *server

	mu sync.Mutex
	// filled is signalled when there is something to send (or the emitter ends), drained
	// when a full batch left the queue.
	filled, drained sync.Cond
	cur             *protocol.WireBatch   // being filled; nil when empty
	full            []*protocol.WireBatch // sealed, oldest first
	stopped         bool
	// lastSize sizes the next batch's buffer like the last full one.
	lastSize int
}

func newEmitter(ctx context.Context, srv *server) *emitter {
	e := &emitter{ctx: ctx, srv: srv}
	e.filled.L, e.drained.L = &e.mu, &e.mu
	context.AfterFunc(ctx, e.wake)
	return e
}

// add appends one event with appendEvent, blocking while maxQueuedBatches full batches wait
// (back-pressure). Events emitted after the watch ended are dropped: nobody is listening
// any more.
func (e *emitter) add(appendEvent func(*protocol.WireBatch)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.full) >= maxQueuedBatches && !e.ended() {
		e.drained.Wait()
	}
	if e.ended() {
		return
	}
	if e.cur == nil {
		e.cur = protocol.NewWireBatch(min(max(e.lastSize, 4096), 2*maxBatchBytes))
	}
	appendEvent(e.cur)
	if e.cur.Events() >= maxBatchEvents || e.cur.Len() >= maxBatchBytes {
		e.lastSize = e.cur.Len()
		e.full = append(e.full, e.cur)
		e.cur = nil
	}
	e.filled.Signal()
}

func (e *emitter) ended() bool { return e.stopped || e.ctx.Err() != nil }

// wake lets every waiter see that the emitter ended.
func (e *emitter) wake() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.filled.Broadcast()
	e.drained.Broadcast()
}

func (e *emitter) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.wake()
}

// next returns the next batch to send: the oldest full one, else the one being filled. It
// blocks while there is none; nil means stop: the stream's context ended, or the emitter
// was stopped and everything was handed out.
func (e *emitter) next() *protocol.WireBatch {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		switch {
		case e.ctx.Err() != nil:
			return nil
		case len(e.full) > 0:
			b := e.full[0]
			e.full = append(e.full[:0], e.full[1:]...)
			e.drained.Broadcast()
			return b
		case e.cur != nil && e.cur.Events() > 0:
			b := e.cur
			e.cur = nil
			return b
		case e.stopped:
			return nil
		}
		e.filled.Wait()
	}
}

// run sends batches until stop, then sends what is still queued. It returns early, without
// error, when the stream's context ends.
func (e *emitter) run(send func(*protocol.WireBatch) error) error {
	for {
		b := e.next()
		if b == nil {
			return nil
		}
		if err := send(b); err != nil {
			return err
		}
	}
}

func (e *emitter) Snapshot(services []catalog.Service) {
	e.add((*protocol.WireBatch).AppendSnapshotBegin)
	for _, svc := range services {
		e.Upsert(svc)
	}
	e.add((*protocol.WireBatch).AppendSnapshotEnd)
}

func (e *emitter) Upsert(svc catalog.Service) {
	var err error
	e.add(func(b *protocol.WireBatch) { err = b.AppendUpsert(svc, maxServiceBytes) })
	if err != nil {
		// Sending it would break the stream for everyone; the host keeps what it knew.
		e.reject(catalog.Clip(svc.Key, 256), svc.Key, fmt.Sprintf("service with %d instances cannot be sent: %v", len(svc.Instances), err))
	}
}

func (e *emitter) Delete(key string) {
	e.add(func(b *protocol.WireBatch) { b.AppendDelete(key) })
}

func (e *emitter) Health(connected bool, message string) {
	message = e.srv.redact(message)
	e.srv.health.Store(&registryv1.HealthResponse{Connected: connected, Message: message})
	e.add(func(b *protocol.WireBatch) { b.AppendHealth(connected, message) })
}

func (e *emitter) Reject(item, reason string) { e.reject(item, "", reason) }

func (e *emitter) reject(item, key, reason string) {
	item, reason = e.srv.redact(item), e.srv.redact(reason)
	e.add(func(b *protocol.WireBatch) { b.AppendRejection(item, reason, key) })
}
