package sdk

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Serve runs p as a registry plugin until the host stops it. It never returns normally.
func Serve(p Plugin) {
	go exitWithParent(os.Getppid(), time.Second)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.ServedVersion(): {protocol.PluginName: &protocol.GRPCPlugin{Impl: NewServer(p)}},
		},
		GRPCServer: plugin.DefaultGRPCServer,
		Logger:     hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Warn}),
	})
	os.Exit(0)
}

// exitWithParent ends the plugin when the host is gone, even if the host was killed before
// it could stop its plugins: a re-parented process sees its parent PID change.
func exitWithParent(parent int, every time.Duration) {
	for range time.Tick(every) {
		if os.Getppid() != parent {
			logger.Warn("host process is gone; plugin exiting")
			os.Exit(1)
		}
	}
}

// server adapts a Plugin to the generated gRPC service. It is exported through NewServer so
// that tests and benchmarks can serve a plugin in process.
type server struct {
	registryv1.UnimplementedRegistryServer
	p          Plugin
	configured atomic.Bool
	watching   atomic.Bool
	health     atomic.Pointer[registryv1.HealthResponse]
}

// NewServer returns the gRPC service for p. Plugins call Serve instead.
func NewServer(p Plugin) registryv1.RegistryServer {
	s := &server{p: p}
	s.health.Store(&registryv1.HealthResponse{Connected: false, Message: "not watching yet"})
	return s
}

func (s *server) Describe(context.Context, *registryv1.DescribeRequest) (*registryv1.DescribeResponse, error) {
	d := s.p.Describe()
	out := &registryv1.DescribeResponse{Kind: d.Kind, Version: d.Version, Capabilities: d.Capabilities}
	for _, o := range d.Options {
		out.Options = append(out.Options, &registryv1.OptionSpec{
			Name: o.Name, Description: o.Description, Type: registryv1.OptionType(o.Type),
			Required: o.Required, DefaultValue: o.Default, Secret: o.Secret,
		})
	}
	return out, nil
}

func (s *server) Configure(ctx context.Context, req *registryv1.ConfigureRequest) (*registryv1.ConfigureResponse, error) {
	if s.watching.Load() {
		return nil, status.Error(codes.FailedPrecondition, "cannot reconfigure while a watch is running")
	}
	cfg := Config{Registry: req.GetRegistry(), Address: req.GetAddress(), Options: req.GetOptions(), Secrets: req.GetSecrets()}
	err := s.p.Configure(ctx, cfg)
	if err == nil {
		s.configured.Store(true)
		return &registryv1.ConfigureResponse{}, nil
	}
	s.configured.Store(false)
	resp := &registryv1.ConfigureResponse{}
	for _, fe := range AsFieldErrors(err) {
		resp.Errors = append(resp.Errors, &registryv1.FieldError{Field: fe.Field, Message: redact(fe.Message, cfg.Secrets)})
	}
	return resp, nil
}

func (s *server) Health(context.Context, *registryv1.HealthRequest) (*registryv1.HealthResponse, error) {
	return s.health.Load(), nil
}

func (s *server) Watch(_ *registryv1.WatchRequest, stream registryv1.Registry_WatchServer) error {
	if !s.configured.Load() {
		return status.Error(codes.FailedPrecondition, "watch before a successful configure")
	}
	if !s.watching.CompareAndSwap(false, true) {
		return status.Error(codes.FailedPrecondition, "a watch is already running")
	}
	defer s.watching.Store(false)

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	e := newEmitter(ctx, s)
	sendErr := make(chan error, 1)
	go func() { sendErr <- e.run(stream.Send) }()

	watchErr := s.p.Watch(ctx, e)
	e.stop()
	if err := <-sendErr; err != nil && ctx.Err() == nil {
		return status.Errorf(codes.Unavailable, "sending events: %v", err)
	}
	switch {
	case watchErr != nil && !errors.Is(watchErr, context.Canceled):
		return status.Errorf(codes.Unavailable, "watch failed: %v", watchErr)
	case ctx.Err() == nil:
		return status.Error(codes.Unavailable, "watch ended")
	}
	return nil
}

// maxBatch bounds one stream message; a busy registry fills batches, a quiet one sends each
// event as soon as it happens.
const maxBatch = 512

type emitter struct {
	ctx    context.Context
	srv    *server
	events chan *registryv1.Event
	done   chan struct{}
	once   sync.Once
}

func newEmitter(ctx context.Context, srv *server) *emitter {
	return &emitter{ctx: ctx, srv: srv, events: make(chan *registryv1.Event, 4*maxBatch), done: make(chan struct{})}
}

func (e *emitter) emit(ev *registryv1.Event) {
	select {
	case e.events <- ev:
	case <-e.done:
	case <-e.ctx.Done():
	}
}

func (e *emitter) stop() { e.once.Do(func() { close(e.done) }) }

// run sends batches until stop, then flushes what is queued.
func (e *emitter) run(send func(*registryv1.WatchResponse) error) error {
	for {
		var first *registryv1.Event
		select {
		case first = <-e.events:
		case <-e.done:
			return e.flush(send)
		case <-e.ctx.Done():
			return nil
		}
		batch := append(make([]*registryv1.Event, 0, maxBatch), first)
	fill:
		for len(batch) < maxBatch {
			select {
			case ev := <-e.events:
				batch = append(batch, ev)
			default:
				break fill
			}
		}
		if err := send(&registryv1.WatchResponse{Events: batch}); err != nil {
			return err
		}
	}
}

func (e *emitter) flush(send func(*registryv1.WatchResponse) error) error {
	var batch []*registryv1.Event
	for {
		select {
		case ev := <-e.events:
			batch = append(batch, ev)
			if len(batch) < maxBatch {
				continue
			}
		default:
		}
		if len(batch) == 0 {
			return nil
		}
		if err := send(&registryv1.WatchResponse{Events: batch}); err != nil {
			return err
		}
		batch = nil
	}
}

func (e *emitter) Snapshot(services []Service) {
	e.emit(&registryv1.Event{Kind: &registryv1.Event_SnapshotBegin{SnapshotBegin: &registryv1.SnapshotBegin{}}})
	for _, svc := range services {
		e.Upsert(svc)
	}
	e.emit(&registryv1.Event{Kind: &registryv1.Event_SnapshotEnd{SnapshotEnd: &registryv1.SnapshotEnd{}}})
}

func (e *emitter) Upsert(svc Service) {
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: protocol.ToProto(svc)}})
}

func (e *emitter) Delete(key string) {
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Delete{Delete: &registryv1.ServiceDelete{Key: key}}})
}

func (e *emitter) Health(connected bool, message string) {
	e.srv.health.Store(&registryv1.HealthResponse{Connected: connected, Message: message})
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Health{Health: &registryv1.HealthStatus{Connected: connected, Message: message}}})
}

func (e *emitter) Reject(item, reason string) {
	e.emit(&registryv1.Event{Kind: &registryv1.Event_Rejected{Rejected: &registryv1.Rejection{Item: item, Reason: reason}}})
}

// redact removes secret values from text that leaves the plugin.
func redact(text string, secrets map[string]string) string {
	for _, v := range secrets {
		if len(v) >= 3 {
			text = strings.ReplaceAll(text, v, "[redacted]")
		}
	}
	return text
}

// newHostLogHandler writes slog records as the JSON lines go-plugin's host parses
// (@level, @message, @timestamp), so the host can re-log them with their level and fields.
func newHostLogHandler(w io.Writer) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
			case slog.LevelKey:
				a = slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				a.Key = "@message"
			}
			return a
		},
	})
}
