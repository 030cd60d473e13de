// Package supervisor runs registry plugins: it finds their binaries, starts and verifies them,
// negotiates the protocol, streams their services into a Sink, and restarts them with
// backoff when they crash, hang or end their stream. A plugin that is down keeps its
// last-known services: nothing is deleted because a plugin or its registry is unavailable.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
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
	// PluginPID is the plugin's process ID while it runs, else 0.
	PluginPID int
	// Connected reports whether the plugin can reach its registry.
	Connected bool
	// Synced is true once the plugin delivered a complete snapshot; it stays true across
	// restarts, because the last snapshot's services are still being served.
	Synced   bool
	LastSync time.Time
	Restarts int
	// Message is the last problem, empty when healthy.
	Message string
	// Failure is why the plugin's last run ended (a Reason* restart reason) while it is not
	// running again; empty once it runs.
	Failure string
}

// Sink receives validated registry state.
type Sink interface {
	// Replace makes services the complete state of registry, except that services listed in
	// keep (sent whole but unusable this time) keep their previous state.
	Replace(registry string, services []catalog.Service, keep []string)
	Upsert(svc catalog.Service)
	Delete(registry, key string)
	Status(registry string, st Status)
	// Reject reports an item that could not be used; it returns whether the sink had not seen
	// this item with this reason before. Only new rejections are counted and logged as
	// warnings, so a bad item sent again (every snapshot, every restart) counts once.
	Reject(r catalog.Rejection) (new bool)
}

// Config tunes supervision.
type Config struct {
	// PluginDir holds meltemi-registry-<kind> binaries: one directory, or several separated
	// by os.PathListSeparator, searched in order as PATH is (the first one holding a kind's
	// binary serves it), so plugins added from other images sit beside the built-in ones.
	PluginDir string
	Logger    *slog.Logger
	Metrics   *Metrics
	// MinBackoff and MaxBackoff bound restart delays; they double per failed start.
	MinBackoff, MaxBackoff time.Duration
	// HealthInterval is how often a running plugin is asked for its health (each call may
	// take half of it); a plugin that fails a call is reported not connected at once, and
	// one that fails HealthFailures calls in a row is considered hung and restarted. With
	// the defaults (5 s, 3) a frozen plugin shows connected=0 within 7.5 s and is restarted
	// within 17.5 s.
	HealthInterval time.Duration
	HealthFailures int
	// StartTimeout bounds the plugin handshake, and each of Describe and Configure.
	StartTimeout time.Duration
	// StopTimeout is how long a plugin may take to exit when asked before it is killed.
	StopTimeout time.Duration
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
		c.HealthInterval = 5 * time.Second
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = 3
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 15 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 5 * time.Second
	}
}

// BinaryPath is where the plugin for kind is expected.
func BinaryPath(dir, kind string) string { return filepath.Join(dir, protocol.BinaryPrefix+kind) }

// Discover lists the plugin binaries in dirs (a PluginDir: one or more directories) by
// kind; a kind in several directories is served by the first.
func Discover(dirs string) (map[string]string, error) {
	found := map[string]string{}
	for _, dir := range filepath.SplitList(dirs) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("reading plugin directory: %w", err)
		}
		for _, e := range entries {
			kind, ok := strings.CutPrefix(e.Name(), protocol.BinaryPrefix)
			if _, seen := found[kind]; seen || !ok || checkKind(kind) != nil || e.IsDir() {
				continue
			}
			if path := filepath.Join(dir, e.Name()); isExecutable(path) {
				found[kind] = path
			}
		}
	}
	return found, nil
}

// FindPlugin is the binary serving kind: the first in dirs (a PluginDir).
func FindPlugin(dirs, kind string) (string, error) {
	if err := checkKind(kind); err != nil {
		return "", err
	}
	list := filepath.SplitList(dirs)
	for _, dir := range list {
		if path := BinaryPath(dir, kind); isExecutable(path) {
			return path, nil
		}
	}
	return "", fmt.Errorf("no plugin for registry kind %q: no executable %s in %s", kind, protocol.BinaryPrefix+kind, strings.Join(list, ", "))
}

// isExecutable reports whether path is, after links (plugins may be installed as symlinks to
// versioned files), a regular file someone may execute.
func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// checkKind keeps a registry kind from naming anything but a file in the plugin directory.
func checkKind(kind string) error {
	if errs := validation.IsDNS1123Label(kind); len(errs) > 0 {
		return fmt.Errorf("registry kind %q: %s", kind, strings.Join(errs, "; "))
	}
	return nil
}

// FileChecksum is the hex SHA-256 of a file, the form Registration.Checksum takes.
func FileChecksum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Supervisor keeps one registry's plugin running.
type Supervisor struct {
	cfg     Config
	reg     Registration
	sink    Sink
	log     *slog.Logger
	metrics *registryMetrics
	redact  *protocol.Redactor

	mu     sync.Mutex
	status Status
}

// NewSupervisor returns a supervisor for reg; call Run.
func NewSupervisor(cfg Config, reg Registration, sink Sink) *Supervisor {
	cfg.setDefaults()
	return &Supervisor{
		cfg: cfg, reg: reg, sink: sink,
		log:     cfg.Logger.With("registry", reg.Name, "kind", reg.Kind),
		metrics: cfg.Metrics.forRegistry(reg.Name),
		redact:  protocol.NewRedactor(reg.Secrets),
	}
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
	s.metrics.setStatus(st)
	s.sink.Status(s.reg.Name, st)
}

// runError is why one run of a plugin ended.
type runError struct {
	reason string
	err    error
}

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// Run starts the plugin and restarts it until ctx ends. Its last-known services stay in the
// sink while it is down.
func (s *Supervisor) Run(ctx context.Context) {
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			s.update(func(st *Status) { st.PluginRunning, st.PluginPID = false, 0 })
			return
		}
		// A plugin that ran for a while before failing starts again quickly; one that keeps
		// failing soon after start waits longer each time.
		if time.Since(started) > 4*s.cfg.MaxBackoff {
			backoff = s.cfg.MinBackoff
		}
		reason := ReasonStreamEnded
		var re *runError
		if errors.As(err, &re) {
			reason = re.reason
		}
		msg := s.redact.Redact(err.Error())
		s.log.Error("registry plugin stopped; keeping its last-known services and restarting it", "reason", reason, "error", msg, "retryIn", backoff)
		s.metrics.restart(reason)
		s.update(func(st *Status) {
			st.PluginRunning, st.PluginPID, st.Connected, st.Message, st.Failure = false, 0, false, msg, reason
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
	fail := func(reason string, err error) error { return &runError{reason, err} }
	path, err := FindPlugin(s.cfg.PluginDir, s.reg.Kind)
	if err != nil {
		return fail(ReasonStartFailed, err)
	}
	begin := time.Now()
	p, err := startPlugin(path, s.reg.Checksum, s.cfg.StartTimeout, s.log, s.redact)
	if err != nil {
		return fail(ReasonStartFailed, err)
	}
	hung := false
	defer func() { p.stop(s.cfg.StopTimeout, hung) }()
	s.metrics.started(time.Since(begin).Seconds())

	callCtx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	desc, err := p.rpc.Describe(callCtx, &registryv1.DescribeRequest{})
	if err != nil {
		return fail(ReasonStartFailed, fmt.Errorf("describe: %w", err))
	}
	if desc.GetKind() != s.reg.Kind {
		return fail(ReasonStartFailed, fmt.Errorf("plugin %s serves kind %q, not %q", path, desc.GetKind(), s.reg.Kind))
	}
	resp, err := p.rpc.Configure(callCtx, &registryv1.ConfigureRequest{
		Registry: s.reg.Name, Address: s.reg.Address, Options: s.reg.Options, Secrets: s.reg.Secrets,
	})
	if err != nil {
		return fail(ReasonConfigureFailed, fmt.Errorf("configure: %w", err))
	}
	if errs := resp.GetErrors(); len(errs) > 0 {
		return fail(ReasonConfigureFailed, &ConfigError{Registry: s.reg.Name, Errors: errs})
	}
	cancel()
	s.update(func(st *Status) {
		st.PluginRunning, st.PluginVersion, st.PluginPID, st.Message, st.Failure = true, desc.GetVersion(), p.pid, "", ""
	})
	s.log.Info("registry plugin started", "version", desc.GetVersion(), "pid", p.pid,
		"protocol", p.client.NegotiatedVersion(), "autoMTLS", true, "startSeconds", time.Since(begin).Seconds())

	watchCtx, cancelWatch := context.WithCancelCause(ctx)
	defer cancelWatch(nil)
	go s.watchHealth(watchCtx, p.rpc, cancelWatch)
	stream, err := p.rpc.Watch(watchCtx, &registryv1.WatchRequest{})
	if err == nil {
		err = s.consume(stream, newReceiver(s.reg.Name, s.sink, s.log, s.metrics, s.redact, s.update))
	}
	switch cause := context.Cause(watchCtx); {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(cause, errHung):
		hung = true
		return fail(ReasonHung, cause)
	case p.exited(300 * time.Millisecond):
		return fail(ReasonExited, fmt.Errorf("plugin process exited: %w", err))
	}
	return fail(ReasonStreamEnded, fmt.Errorf("watch: %w", err))
}

func (s *Supervisor) consume(stream registryv1.Registry_WatchClient, r *receiver) error {
	var batch protocol.Batch // decoded straight into model types by protocol.Codec
	for {
		if err := stream.RecvMsg(&batch); err != nil {
			return err
		}
		for i := range batch.Events {
			r.handle(&batch.Events[i])
		}
	}
}

var errHung = errors.New("plugin not responding to health checks")

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
		hctx, hcancel := context.WithTimeout(ctx, s.cfg.HealthInterval/2)
		resp, err := reg.Health(hctx, &registryv1.HealthRequest{})
		hcancel()
		if err == nil {
			if failures > 0 {
				// Answering again: its own word on the registry connection holds.
				msg := s.redact.Redact(resp.GetMessage())
				if resp.GetConnected() {
					msg = ""
				}
				s.update(func(st *Status) { st.Connected, st.Message = resp.GetConnected(), msg })
			}
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		// A plugin that does not answer cannot vouch for its registry connection.
		msg := fmt.Sprintf("registry plugin not answering health checks (%d in a row)", failures)
		s.update(func(st *Status) { st.Connected, st.Message = false, msg })
		if failures == 1 {
			s.log.Warn(msg+"; reporting the registry not connected", "err", err)
		}
		if failures >= s.cfg.HealthFailures {
			cancel(fmt.Errorf("%w (%d in a row, last: %v)", errHung, failures, err))
			return
		}
	}
}

// proc is a started plugin process.
type proc struct {
	client *plugin.Client
	rpc    registryv1.RegistryClient
	cmd    *exec.Cmd // its ProcessState (exit status, rusage) is set once stop returned
	pid    int
	kill   func() error
}

// startPlugin spawns a plugin binary, verifies its checksum (when one is given) and
// completes the handshake over mutually authenticated TLS. The caller must stop it.
func startPlugin(path, checksum string, timeout time.Duration, log *slog.Logger, r *protocol.Redactor) (*proc, error) {
	cmd, started, err := pluginCommand(path)
	if err != nil {
		return nil, err
	}
	defer started()
	// The host's PID lets the plugin notice when the host is gone (see sdk.Serve).
	cmd.Env = append(os.Environ(), protocol.HostPIDEnv+"="+strconv.Itoa(os.Getpid()))
	cc := &plugin.ClientConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.Version: {protocol.PluginName: &protocol.GRPCPlugin{}},
		},
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     timeout,
		Logger:           newHCLogAdapter(log, filepath.Base(path), r),
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(protocol.MaxMessageBytes), grpc.ForceCodecV2(protocol.Codec{}))},
	}
	if checksum != "" {
		sum, err := hex.DecodeString(checksum)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("plugin checksum %q for %s is not a hex SHA-256", checksum, path)
		}
		cc.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := plugin.NewClient(cc)
	p := &proc{client: client, cmd: cmd}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, explainStartError(path, checksum, err)
	}
	if cmd.Process != nil {
		p.pid, p.kill = cmd.Process.Pid, cmd.Process.Kill
	}
	raw, err := rpc.Dispense(protocol.PluginName)
	if err != nil {
		p.stop(time.Second, false)
		return nil, fmt.Errorf("dispensing registry service: %w", err)
	}
	var ok bool
	if p.rpc, ok = raw.(registryv1.RegistryClient); !ok {
		p.stop(time.Second, false)
		return nil, fmt.Errorf("plugin %s does not serve the registry protocol", path)
	}
	return p, nil
}

// stop ends the plugin process: politely first, then with SIGKILL after grace (or at once
// when it is known to hang, since a hung plugin cannot answer the shutdown request).
func (p *proc) stop(grace time.Duration, hung bool) {
	if hung && p.kill != nil {
		_ = p.kill()
	}
	done := make(chan struct{})
	go func() { p.client.Kill(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	if p.kill != nil {
		_ = p.kill()
	}
	<-done
}

// exited reports whether the plugin process ended, waiting up to wait for it to be noticed.
func (p *proc) exited(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for !p.client.Exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Describe starts the plugin at path just long enough to ask what it is.
func Describe(ctx context.Context, path, checksum string, log *slog.Logger) (*registryv1.DescribeResponse, error) {
	p, err := startPlugin(path, checksum, 15*time.Second, log, nil)
	if err != nil {
		return nil, err
	}
	defer p.stop(5*time.Second, false)
	return p.rpc.Describe(ctx, &registryv1.DescribeRequest{})
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

// explainStartError turns go-plugin's start errors into ones that say what to do.
func explainStartError(path, checksum string, err error) error {
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		actual, cerr := FileChecksum(path)
		if cerr != nil {
			actual = "unreadable: " + cerr.Error()
		}
		return fmt.Errorf("refusing plugin %s: its SHA-256 checksum %s does not match the configured checksum %s", path, actual, checksum)
	case strings.Contains(msg, "incompatible core api version"):
		return fmt.Errorf("plugin %s was built with an incompatible go-plugin version: %w", path, err)
	case strings.Contains(msg, "incompatible api version"):
		return fmt.Errorf("plugin %s speaks another plugin protocol version than this host, which speaks version %d; use a plugin built for protocol %d: %w",
			path, protocol.Version, protocol.Version, err)
	case strings.Contains(msg, "unrecognized remote plugin message"):
		return fmt.Errorf("%s is not a Meltemi registry plugin (no plugin handshake): %w", path, err)
	}
	return fmt.Errorf("starting plugin %s: %w", path, err)
}
