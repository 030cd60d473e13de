// Package host runs registry plugins: it finds their binaries, starts and verifies them,
// negotiates the protocol, streams their services into a Sink, and restarts them with
// backoff when they crash, hang or end their stream. A plugin that is down keeps its
// last-known services: nothing is deleted because a plugin or its registry is unavailable.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Registration is one configured registry.
type Registration struct {
	Name    string
	Kind    string
	Address string
	Options map[string]string
	// Secrets are passed to the plugin and never logged.
	Secrets map[string]string
	// Checksum is the expected hex SHA-256 of the plugin binary; empty skips the check.
	Checksum string
	// KeepLastNonEmpty is host-side policy, not passed to the plugin: see ServiceRegistrySpec.
	KeepLastNonEmpty bool
}

// Status is what the host knows about one registry's plugin.
type Status struct {
	PluginRunning bool
	PluginVersion string
	// Connected reports whether the plugin can reach its registry.
	Connected bool
	// Synced is true once the plugin delivered a complete snapshot; it stays true across
	// restarts, because the last snapshot's services are still being served.
	Synced   bool
	LastSync time.Time
	Restarts int
	// Message is the last problem, empty when healthy.
	Message string
}

// Sink receives validated registry state.
type Sink interface {
	// Replace makes services the complete state of registry, except that services listed in
	// keep (sent whole but unusable this time) keep their previous state.
	Replace(registry string, services []model.Service, keep []string)
	Upsert(svc model.Service)
	Delete(registry, key string)
	Status(registry string, st Status)
	Reject(r model.Rejection)
}

// Config tunes supervision.
type Config struct {
	// PluginDir holds meltemi-registry-<kind> binaries.
	PluginDir string
	Logger    *slog.Logger
	Metrics   *Metrics
	// MinBackoff and MaxBackoff bound restart delays; they double per failed start.
	MinBackoff, MaxBackoff time.Duration
	// HealthInterval is how often a running plugin is asked for its health; a plugin that
	// fails HealthFailures calls in a row is considered hung and restarted.
	HealthInterval time.Duration
	HealthFailures int
	// StartTimeout bounds the plugin handshake.
	StartTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 10 * time.Second
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = 3
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 15 * time.Second
	}
}

// BinaryPath is where the plugin for kind is expected.
func BinaryPath(dir, kind string) string { return filepath.Join(dir, protocol.BinaryPrefix+kind) }

// Discover lists the plugin binaries in dir by kind.
func Discover(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading plugin directory: %w", err)
	}
	found := map[string]string{}
	for _, e := range entries {
		kind, ok := strings.CutPrefix(e.Name(), protocol.BinaryPrefix)
		if !ok || kind == "" || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Mode()&0o111 == 0 {
			continue
		}
		found[kind] = filepath.Join(dir, e.Name())
	}
	return found, nil
}

// FileChecksum is the hex SHA-256 of a file, the form Registration.Checksum takes.
func FileChecksum(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}

// Supervisor keeps one registry's plugin running.
type Supervisor struct {
	cfg  Config
	reg  Registration
	sink Sink
	log  *slog.Logger

	mu     sync.Mutex
	status Status
}

// NewSupervisor returns a supervisor for reg; call Run.
func NewSupervisor(cfg Config, reg Registration, sink Sink) *Supervisor {
	cfg.setDefaults()
	return &Supervisor{cfg: cfg, reg: reg, sink: sink, log: cfg.Logger.With("registry", reg.Name, "kind", reg.Kind)}
}

// Status returns the current status.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Supervisor) update(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	st := s.status
	s.mu.Unlock()
	s.cfg.Metrics.setStatus(s.reg.Name, st)
	s.sink.Status(s.reg.Name, st)
}

// Run starts the plugin and restarts it until ctx ends. Its last-known services stay in the
// sink while it is down.
func (s *Supervisor) Run(ctx context.Context) {
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.update(func(st *Status) { st.PluginRunning = false })
			return
		}
		// A plugin that ran for a while before failing starts again quickly; one that keeps
		// failing at start waits longer each time.
		if time.Since(started) > 4*s.cfg.MaxBackoff {
			backoff = s.cfg.MinBackoff
		}
		msg := "plugin stopped"
		if err != nil {
			msg = err.Error()
		}
		s.log.Error("registry plugin failed; keeping its last-known services", "error", msg, "retryIn", backoff)
		s.cfg.Metrics.restart(s.reg.Name)
		s.update(func(st *Status) {
			st.PluginRunning, st.Connected, st.Message = false, false, msg
			st.Restarts++
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

func (s *Supervisor) runOnce(ctx context.Context) error {
	path := BinaryPath(s.cfg.PluginDir, s.reg.Kind)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no plugin for registry kind %q: %w", s.reg.Kind, err)
	}
	begin := time.Now()
	client, reg, err := startPlugin(path, s.reg.Checksum, s.cfg.StartTimeout, s.log)
	if err != nil {
		return err
	}
	defer client.Kill()
	s.cfg.Metrics.started(time.Since(begin).Seconds())

	desc, err := reg.Describe(ctx, &registryv1.DescribeRequest{})
	if err != nil {
		return fmt.Errorf("describe: %w", err)
	}
	if desc.GetKind() != s.reg.Kind {
		return fmt.Errorf("plugin %s serves kind %q, not %q", path, desc.GetKind(), s.reg.Kind)
	}
	resp, err := reg.Configure(ctx, &registryv1.ConfigureRequest{
		Registry: s.reg.Name, Address: s.reg.Address, Options: s.reg.Options, Secrets: s.reg.Secrets,
	})
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	if errs := resp.GetErrors(); len(errs) > 0 {
		return &ConfigError{Registry: s.reg.Name, Errors: errs}
	}
	s.update(func(st *Status) {
		st.PluginRunning, st.PluginVersion, st.Message = true, desc.GetVersion(), ""
	})
	s.log.Info("registry plugin started", "version", desc.GetVersion(), "pid", pluginPID(client))

	watchCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go s.watchHealth(watchCtx, reg, cancel)
	stream, err := reg.Watch(watchCtx, &registryv1.WatchRequest{})
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return s.consume(watchCtx, stream)
}

// startPlugin spawns a plugin binary, verifies it and completes the handshake. The caller
// must Kill the returned client.
func startPlugin(path, checksum string, timeout time.Duration, log *slog.Logger) (*plugin.Client, registryv1.RegistryClient, error) {
	cc := &plugin.ClientConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.Version: {protocol.PluginName: &protocol.GRPCPlugin{}},
		},
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     timeout,
		Logger:           newHCLogAdapter(log),
	}
	if checksum != "" {
		sum, err := hex.DecodeString(checksum)
		if err != nil || len(sum) != sha256.Size {
			return nil, nil, fmt.Errorf("plugin checksum %q is not a hex SHA-256", checksum)
		}
		cc.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := plugin.NewClient(cc)
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, explainStartError(path, err)
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		client.Kill()
		return nil, nil, fmt.Errorf("dispensing registry service: %w", err)
	}
	reg, ok := raw.(registryv1.RegistryClient)
	if !ok {
		client.Kill()
		return nil, nil, fmt.Errorf("plugin %s does not serve the registry protocol", path)
	}
	return client, reg, nil
}

// Describe starts the plugin at path just long enough to ask what it is.
func Describe(ctx context.Context, path, checksum string, log *slog.Logger) (*registryv1.DescribeResponse, error) {
	client, reg, err := startPlugin(path, checksum, 15*time.Second, log)
	if err != nil {
		return nil, err
	}
	defer client.Kill()
	return reg.Describe(ctx, &registryv1.DescribeRequest{})
}

// ConfigError is a registry configuration the plugin refused, field by field.
type ConfigError struct {
	Registry string
	Errors   []*registryv1.FieldError
}

func (e *ConfigError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		if fe.GetField() == "" {
			parts[i] = fe.GetMessage()
		} else {
			parts[i] = fe.GetField() + ": " + fe.GetMessage()
		}
	}
	return fmt.Sprintf("registry %s: invalid configuration: %s", e.Registry, strings.Join(parts, "; "))
}

func explainStartError(path string, err error) error {
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("refusing plugin %s: its SHA-256 does not match the configured checksum: %w", path, err)
	case strings.Contains(err.Error(), "Incompatible API version"):
		return fmt.Errorf("plugin %s speaks another plugin protocol version than this host (%d): %w", path, protocol.Version, err)
	}
	return fmt.Errorf("starting plugin %s: %w", path, err)
}

func pluginPID(c *plugin.Client) int {
	if rc := c.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// watchHealth cancels the watch when the plugin stops answering: a hung plugin is restarted
// like a crashed one.
func (s *Supervisor) watchHealth(ctx context.Context, reg registryv1.RegistryClient, cancel context.CancelCauseFunc) {
	failures := 0
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, hcancel := context.WithTimeout(ctx, s.cfg.HealthInterval)
		_, err := reg.Health(hctx, &registryv1.HealthRequest{})
		hcancel()
		if err == nil {
			failures = 0
			continue
		}
		failures++
		if failures >= s.cfg.HealthFailures {
			cancel(fmt.Errorf("plugin not responding to health checks: %w", err))
			return
		}
	}
}

func (s *Supervisor) consume(ctx context.Context, stream registryv1.Registry_WatchClient) error {
	var (
		inSnapshot bool
		pending    []model.Service
		keep       []string
	)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return cause
			}
			return fmt.Errorf("watch stream: %w", err)
		}
		for _, ev := range resp.GetEvents() {
			switch k := ev.GetKind().(type) {
			case *registryv1.Event_SnapshotBegin:
				inSnapshot, pending, keep = true, pending[:0], nil
				s.cfg.Metrics.event(s.reg.Name, "snapshot")
			case *registryv1.Event_Upsert:
				s.cfg.Metrics.event(s.reg.Name, "upsert")
				svc, ok := s.validate(k.Upsert)
				switch {
				case inSnapshot && ok:
					pending = append(pending, svc)
				case inSnapshot:
					keep = append(keep, k.Upsert.GetKey())
				case ok:
					s.sink.Upsert(svc)
				}
			case *registryv1.Event_Delete:
				s.cfg.Metrics.event(s.reg.Name, "delete")
				if !inSnapshot {
					s.sink.Delete(s.reg.Name, k.Delete.GetKey())
				}
			case *registryv1.Event_SnapshotEnd:
				if !inSnapshot {
					continue
				}
				s.sink.Replace(s.reg.Name, pending, keep)
				inSnapshot, pending, keep = false, nil, nil
				s.update(func(st *Status) { st.Synced, st.LastSync = true, time.Now() })
			case *registryv1.Event_Health:
				connected, msg := k.Health.GetConnected(), k.Health.GetMessage()
				if !connected {
					s.log.Warn("registry unreachable; keeping its last-known services", "reason", msg)
				}
				s.update(func(st *Status) { st.Connected, st.Message = connected, msg })
			case *registryv1.Event_Rejected:
				s.reject(model.Rejection{Registry: s.reg.Name, Item: k.Rejected.GetItem(), Reason: k.Rejected.GetReason()})
			}
		}
	}
}

// validate converts and checks one service; unusable parts are rejected one by one.
func (s *Supervisor) validate(p *registryv1.Service) (model.Service, bool) {
	svc, rejections, ok := model.Validate(protocol.FromProto(s.reg.Name, p))
	for _, r := range rejections {
		s.reject(r)
	}
	return svc, ok
}

func (s *Supervisor) reject(r model.Rejection) {
	s.cfg.Metrics.reject(s.reg.Name)
	s.log.Warn("registry item rejected", "item", r.Item, "reason", r.Reason)
	s.sink.Reject(r)
}
