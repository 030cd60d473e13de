package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meltemi-mesh/meltemi/internal/gctune"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Serve runs p as a registry plugin until the host stops it. It never returns normally.
//
// Run by a person with the arguments "install DIR", it copies itself into DIR and exits.
func Serve(p Plugin) {
	if handled, status := runInstall(os.Args[1:], p.Describe().Kind, os.Stdout, os.Stderr); handled {
		os.Exit(status)
	}
	nameProcess()
	// A plugin's live heap is a few MiB of registry state: without headroom it would collect
	// dozens of times a second under a stream of upserts (about a fifth of what the stream costs).
	gctune.Keep(100, 64<<20)
	go exitWithHost(hostWatchInterval)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.ServedVersion(): {protocol.PluginName: &protocol.GRPCPlugin{Impl: NewServer(p)}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			// The codec sends the emitter's pre-encoded batches as they are (see emitter).
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(protocol.MaxMessageBytes), grpc.ForceServerCodecV2(protocol.Codec{}))...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Warn}),
	})
	os.Exit(0)
}

// nameProcess gives the process its binary's name: the host runs plugins through
// /proc/self/fd (see plugins/supervisor), which would otherwise leave a number as the name that
// ps and pgrep show. Best effort; Linux only.
func nameProcess() {
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15] // the kernel's limit
	}
	_ = os.WriteFile("/proc/self/comm", []byte(name), 0)
}

// hostWatchInterval is how often a plugin checks that its host is still there.
const hostWatchInterval = 500 * time.Millisecond

// exitWithHost ends the plugin when the host is gone, even if the host was killed before it
// could stop its plugins: a re-parented process sees its parent PID change. The host's PID
// in the environment also catches a host that died before this check first ran.
func exitWithHost(every time.Duration) {
	parent := os.Getppid()
	if hostGone(parent, parent, os.Getenv(protocol.HostPIDEnv)) {
		exitHostGone()
	}
	for range time.Tick(every) {
		if hostGone(parent, os.Getppid(), os.Getenv(protocol.HostPIDEnv)) {
			exitHostGone()
		}
	}
}

// hostGone reports whether the plugin lost its host: its parent changed since start, or it
// is not the host named by the environment (when the host named one).
func hostGone(startParent, parent int, hostPID string) bool {
	if parent != startParent {
		return true
	}
	if pid, err := strconv.Atoi(hostPID); err == nil && pid > 0 && pid != parent {
		return true
	}
	return false
}

func exitHostGone() {
	logger.Warn("host process is gone; plugin exiting")
	os.Exit(1)
}

// server adapts a Plugin to the generated gRPC service.
type server struct {
	registryv1.UnimplementedRegistryServer
	p          Plugin
	configured atomic.Bool
	watching   atomic.Bool
	health     atomic.Pointer[registryv1.HealthResponse]
	// redactor holds the configured secrets: every text leaving the plugin passes it.
	redactor atomic.Pointer[protocol.Redactor]
}

// NewServer returns the gRPC service for p. Plugins call Serve instead; tests and benchmarks
// use it to serve a plugin in process. Its Watch sends *protocol.WireBatch messages: a gRPC
// server for it needs protocol.Codec (grpc.ForceServerCodecV2), as Serve's has.
func NewServer(p Plugin) registryv1.RegistryServer {
	s := &server{p: p}
	s.health.Store(&registryv1.HealthResponse{Connected: false, Message: "not watching yet"})
	return s
}

func (s *server) redact(text string) string { return s.redactor.Load().Redact(text) }

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
	r := protocol.NewRedactor(cfg.Secrets)
	s.redactor.Store(r)
	logRedactor.Store(r)
	err := s.p.Configure(ctx, cfg)
	if err == nil {
		s.configured.Store(true)
		return &registryv1.ConfigureResponse{}, nil
	}
	s.configured.Store(false)
	resp := &registryv1.ConfigureResponse{}
	for _, fe := range AsFieldErrors(err) {
		resp.Errors = append(resp.Errors, &registryv1.FieldError{Field: fe.Field, Message: s.redact(fe.Message)})
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
	e := newEmitter(ctx, s, s.p.Describe().UniqueHosts)
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- e.run(func(b *protocol.WireBatch) error { return stream.SendMsg(b) })
	}()

	watchErr := s.runWatch(ctx, e)
	e.stop()
	if err := <-sendErr; err != nil && ctx.Err() == nil {
		return status.Errorf(codes.Unavailable, "sending events: %v", err)
	}
	switch {
	case watchErr != nil && !errors.Is(watchErr, context.Canceled):
		return status.Error(codes.Unavailable, "watch failed: "+s.redact(watchErr.Error()))
	case ctx.Err() == nil:
		return status.Error(codes.Unavailable, "watch ended")
	}
	return nil
}

// runWatch turns a panicking Watch into an error: the host restarts the plugin either way,
// but this way it learns why.
func (s *server) runWatch(ctx context.Context, e *emitter) (err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("plugin watch panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.p.Watch(ctx, e)
}
