package supervisor

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/registries/synthetic"
)

// supervised is a supervisor running a real plugin process for one test.
type supervised struct {
	sup     *Supervisor
	sink    *recordSink
	log     *syncBuffer
	metrics *Metrics
	reg     Registration
}

// supervise runs a synthetic plugin under a supervisor until the test ends; the cleanup
// waits for Run to return, so the plugin process is gone when the next test starts.
func supervise(t *testing.T, cfg Config, options map[string]string, edit ...func(*Registration)) *supervised {
	t.Helper()
	log, buf := testLogger(t)
	if cfg.PluginDir == "" {
		cfg.PluginDir = pluginDir
	}
	cfg.Logger = log
	cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
	}
	reg := Registration{Name: "syn-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), Kind: "synthetic", Options: options}
	for _, f := range edit {
		f(&reg)
	}
	s := &supervised{sink: newRecordSink(), log: buf, metrics: cfg.Metrics, reg: reg}
	s.sup = NewSupervisor(cfg, reg, s.sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.sup.Run(ctx) }()
	t.Cleanup(func() {
		pid := s.sup.Status().PluginPID
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("supervisor did not stop within 20s")
		}
		if pid != 0 && processAlive(pid) {
			t.Errorf("plugin process %d still running after the supervisor stopped", pid)
		}
	})
	return s
}

func (s *supervised) restarts(reason string) float64 {
	return counterValue(s.metrics.restarts.WithLabelValues(s.reg.Name, reason))
}

// waitServices waits until the sink holds exactly want (compared by content).
func (s *supervised) waitServices(t *testing.T, timeout time.Duration, want []catalog.Service) {
	t.Helper()
	eventually(t, timeout, func() error {
		got := s.sink.services(s.reg.Name)
		if len(got) != len(want) {
			return fmt.Errorf("%d services, want %d", len(got), len(want))
		}
		for _, w := range want {
			w.Registry = s.reg.Name
			w.Normalize()
			if g, ok := got[w.Key]; !ok || !g.Equal(w) {
				return fmt.Errorf("service %s = %+v, want %+v", w.Key, g, w)
			}
		}
		return nil
	})
}

func expected(t *testing.T, options map[string]string, churned int) []catalog.Service {
	t.Helper()
	svcs, err := synthetic.State("", options, churned)
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

func TestPluginServesSnapshot(t *testing.T) {
	opts := map[string]string{"services": "5", "instancesPerService": "2"}
	s := supervise(t, Config{}, opts)
	s.waitServices(t, 20*time.Second, expected(t, opts, 0))
	st := s.sup.Status()
	if !st.PluginRunning || !st.Synced || !st.Connected || st.PluginVersion != synthetic.Version || st.PluginPID == 0 || st.Restarts != 0 {
		t.Errorf("status %+v", st)
	}
	if !processAlive(st.PluginPID) {
		t.Errorf("plugin pid %d is not running", st.PluginPID)
	}
	// The plugin's own log line reaches the host's log, tagged with the registry.
	eventually(t, 5*time.Second, func() error {
		for line := range strings.SplitSeq(s.log.String(), "\n") {
			if strings.Contains(line, `"msg":"synthetic registry serving"`) && strings.Contains(line, `"registry":"`+s.reg.Name+`"`) &&
				strings.Contains(line, `"plugin":"meltemi-registry-synthetic"`) {
				return nil
			}
		}
		return fmt.Errorf("plugin log line not forwarded")
	})
}

func TestKilledPluginRestartsAndKeepsServices(t *testing.T) {
	// Churn long enough that the kill lands mid-stream.
	opts := map[string]string{"services": "200", "instancesPerService": "3", "churnEvents": "4000", "churnPerSecond": "2000"}
	s := supervise(t, Config{}, opts)
	eventually(t, 20*time.Second, func() error {
		if st := s.sup.Status(); !st.Synced {
			return fmt.Errorf("not synced: %+v", st)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // some churn flows
	first := s.sup.Status().PluginPID
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// While the plugin is down, every service stays.
	eventually(t, 10*time.Second, func() error {
		if n := len(s.sink.services(s.reg.Name)); n != 200 {
			t.Fatalf("%d services while the plugin was down, want 200", n)
		}
		if st := s.sup.Status(); st.Restarts == 0 || st.PluginPID == first || st.PluginPID == 0 {
			return fmt.Errorf("not restarted yet: %+v", st)
		}
		return nil
	})
	// The restarted plugin's snapshot and churn converge on its final state.
	s.waitServices(t, 30*time.Second, expected(t, opts, 4000))
	if _, _, removed := s.sink.snapshot(); len(removed) > 0 {
		t.Errorf("services removed across the crash: %v", removed[:min(len(removed), 10)])
	}
	if processAlive(first) {
		t.Errorf("killed plugin %d still alive", first)
	}
	if got := s.restarts(ReasonExited); got != 1 {
		t.Errorf("restarts{reason=exited} = %v, want 1", got)
	}
	if st := s.sup.Status(); st.Restarts != 1 {
		t.Errorf("status restarts = %d, want 1", st.Restarts)
	}
}

func TestRestartWritesOnlyChanges(t *testing.T) {
	// The plugin ends its stream every 700ms; each new snapshot equals the last one.
	opts := map[string]string{"services": "50", "instancesPerService": "2", "closeAfter": "700ms"}
	s := supervise(t, Config{}, opts)
	eventually(t, 20*time.Second, func() error {
		s.sink.mu.Lock()
		defer s.sink.mu.Unlock()
		if s.sink.replaces < 3 {
			return fmt.Errorf("%d snapshots so far", s.sink.replaces)
		}
		return nil
	})
	s.sink.mu.Lock()
	changed := slices.Clone(s.sink.changed)
	s.sink.mu.Unlock()
	if changed[0] != 50 {
		t.Errorf("first snapshot changed %d hosts, want 50", changed[0])
	}
	for i, n := range changed[1:] {
		if n != 0 {
			t.Errorf("snapshot %d after a restart changed %d hosts, want 0", i+2, n)
		}
	}
	if s.restarts(ReasonStreamEnded) < 2 {
		t.Errorf("restarts{reason=stream-ended} = %v", s.restarts(ReasonStreamEnded))
	}
	if !strings.Contains(s.log.String(), "closing its stream after 700ms") {
		t.Errorf("host log does not say why the stream ended")
	}
}

func TestHungPluginIsRestarted(t *testing.T) {
	opts := map[string]string{"services": "3", "instancesPerService": "1", "hangAfter": "300ms"}
	s := supervise(t, Config{HealthInterval: 100 * time.Millisecond, HealthFailures: 2, StopTimeout: time.Second}, opts)
	eventually(t, 20*time.Second, func() error {
		if s.restarts(ReasonHung) == 0 {
			return fmt.Errorf("no restart for a hang yet; status %+v", s.sup.Status())
		}
		return nil
	})
	// The frozen process was killed, and its services were kept.
	_, _, removed := s.sink.snapshot()
	if len(removed) > 0 {
		t.Errorf("services removed: %v", removed)
	}
	if n := len(s.sink.services(s.reg.Name)); n != 3 {
		t.Errorf("%d services, want 3", n)
	}
	// Not connected from the first unanswered health check, before the restart.
	statuses, _, _ := s.sink.snapshot()
	notAnswering := slices.IndexFunc(statuses, func(st Status) bool {
		return st.PluginRunning && !st.Connected && strings.Contains(st.Message, "not answering health checks (1 in a row)")
	})
	restarted := slices.IndexFunc(statuses, func(st Status) bool { return st.Restarts > 0 })
	if notAnswering < 0 || restarted < 0 || notAnswering > restarted {
		t.Errorf("the hung plugin was not reported not connected before its restart: statuses %+v", statuses)
	}
	var hungPIDs []int
	for _, st := range statuses {
		if st.PluginPID != 0 && !slices.Contains(hungPIDs, st.PluginPID) {
			hungPIDs = append(hungPIDs, st.PluginPID)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if processAlive(hungPIDs[0]) {
			return fmt.Errorf("hung plugin %d still alive", hungPIDs[0])
		}
		return nil
	})
	if !strings.Contains(s.log.String(), "not responding to health checks") {
		t.Errorf("host log does not say the plugin hung")
	}
}

func TestCrashLoopIsRetried(t *testing.T) {
	opts := map[string]string{"services": "2", "instancesPerService": "1", "crashAfter": "50ms"}
	s := supervise(t, Config{}, opts)
	eventually(t, 20*time.Second, func() error {
		if got := s.restarts(ReasonExited); got < 3 {
			return fmt.Errorf("%v restarts", got)
		}
		return nil
	})
	if n := len(s.sink.services(s.reg.Name)); n != 2 {
		t.Errorf("%d services, want 2 (kept across crashes)", n)
	}
	if msg := s.sink.lastStatus().Message; !strings.Contains(msg, "exited") {
		t.Errorf("status message %q does not say the plugin exited", msg)
	}
}

func TestBackoffDoubles(t *testing.T) {
	cfg := Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	var got []time.Duration
	b := cfg.MinBackoff
	for range 6 {
		got = append(got, b)
		b = min(2*b, cfg.MaxBackoff)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("backoffs %v, want %v", got, want)
	}
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	wrong := strings.Repeat("ab", 32)
	s := supervise(t, Config{}, map[string]string{"services": "1"}, func(r *Registration) { r.Checksum = wrong })
	eventually(t, 20*time.Second, func() error {
		if s.restarts(ReasonStartFailed) == 0 {
			return fmt.Errorf("not refused yet")
		}
		return nil
	})
	msg := s.sink.lastStatus().Message
	for _, want := range []string{"refusing plugin", "meltemi-registry-synthetic", "checksum", wrong} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if len(s.sink.services(s.reg.Name)) != 0 {
		t.Errorf("a refused plugin delivered services")
	}
}

func TestMatchingChecksumIsAccepted(t *testing.T) {
	sum, err := FileChecksum(BinaryPath(pluginDir, "synthetic"))
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"services": "2", "instancesPerService": "1"}
	s := supervise(t, Config{}, opts, func(r *Registration) { r.Checksum = sum })
	s.waitServices(t, 20*time.Second, expected(t, opts, 0))
}

func TestProtocolVersionMismatch(t *testing.T) {
	s := supervise(t, Config{PluginDir: pluginDirV2}, map[string]string{"services": "1"})
	eventually(t, 20*time.Second, func() error {
		if s.restarts(ReasonStartFailed) == 0 {
			return fmt.Errorf("not refused yet")
		}
		return nil
	})
	msg := s.sink.lastStatus().Message
	for _, want := range []string{"meltemi-registry-synthetic", "another plugin protocol version", "speaks version 1", "Plugin version: 2"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

func TestConfigurationErrorsAreFieldLevel(t *testing.T) {
	s := supervise(t, Config{}, map[string]string{"services": "-1", "bogus": "1", "churnPerSecond": "fast"})
	eventually(t, 20*time.Second, func() error {
		if s.restarts(ReasonConfigureFailed) == 0 {
			return fmt.Errorf("not refused yet")
		}
		return nil
	})
	msg := s.sink.lastStatus().Message
	for _, want := range []string{"invalid configuration", "services: -1 is negative", "bogus: unknown option", `churnPerSecond: "fast" is not an integer`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

func TestGarbageIsRejectedOneByOne(t *testing.T) {
	opts := map[string]string{"services": "6", "instancesPerService": "2", "garbageEvery": "2"}
	s := supervise(t, Config{}, opts)
	// svc-00001 keeps its good instances; svc-00003 (empty host) and svc-00005 (invalid host)
	// are rejected whole; the others are untouched.
	eventually(t, 20*time.Second, func() error {
		if got := sortedKeys(s.sink.services(s.reg.Name)); !slices.Equal(got, []string{"svc-00000", "svc-00001", "svc-00002", "svc-00004"}) {
			return fmt.Errorf("services %v", got)
		}
		return nil
	})
	svc := s.sink.services(s.reg.Name)["svc-00001"]
	var eps []string
	for _, in := range svc.Instances {
		eps = append(eps, fmt.Sprintf("%s:%d%v", in.Address, in.Port, in.Labels))
	}
	wantEps := []string{"10.0.0.3:20880map[rev:0 version:1.0.0]", "10.0.0.4:20880map[rev:0 version:1.0.0]", "10.255.255.254:20881map[version:1.0.0]"}
	if !slices.Equal(eps, wantEps) {
		t.Errorf("svc-00001 endpoints %v, want %v", eps, wantEps)
	}
	_, rejected, _ := s.sink.snapshot()
	reasons := map[string]string{}
	for _, r := range rejected {
		if r.Registry != s.reg.Name {
			t.Errorf("rejection for registry %q", r.Registry)
		}
		reasons[r.Item] = r.Reason
	}
	want := map[string]string{
		"svc-00001/not-an-ip:20880":                      "not an IP address",
		"svc-00001/10.255.255.254:0":                     "port 0 out of range",
		"svc-00001/10.255.255.254:70000":                 "port 70000 out of range",
		"svc-00001/10.255.255.254:20881 label oversized": "value of 300 bytes",
		"svc-00003": `host "": empty`,
		"svc-00005": "not a DNS name",
	}
	if len(reasons) != len(want) {
		t.Errorf("rejections %v, want %d", reasons, len(want))
	}
	for item, part := range want {
		if !strings.Contains(reasons[item], part) {
			t.Errorf("rejection of %s = %q, want it to contain %q", item, reasons[item], part)
		}
	}
	if got := counterValue(s.metrics.rejected.WithLabelValues(s.reg.Name)); got != float64(len(want)) {
		t.Errorf("rejected metric %v, want %d", got, len(want))
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	const token = "tok-9f8e7d6c5b"
	s := supervise(t, Config{}, map[string]string{"services": "1", "echoSecret": "true"}, func(r *Registration) {
		r.Secrets = map[string]string{"token": token}
	})
	eventually(t, 20*time.Second, func() error {
		if !strings.Contains(s.log.String(), "echoing the token") {
			return fmt.Errorf("echo not logged yet")
		}
		if !s.sup.Status().Synced {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	statuses, rejected, _ := s.sink.snapshot()
	var texts []string
	texts = append(texts, s.log.String())
	for _, st := range statuses {
		texts = append(texts, st.Message)
	}
	for _, r := range rejected {
		texts = append(texts, r.Item, r.Reason)
	}
	all := strings.Join(texts, "\n")
	if strings.Contains(all, token) {
		t.Errorf("the token leaked:\n%s", all)
	}
	if !strings.Contains(all, "[redacted]") {
		t.Errorf("nothing was redacted:\n%s", all)
	}
}

func TestAutoMTLS(t *testing.T) {
	log, _ := testLogger(t)
	p, err := startPlugin(BinaryPath(pluginDir, "synthetic"), "", 15*time.Second, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5*time.Second, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.rpc.Describe(ctx, &registryv1.DescribeRequest{}); err != nil {
		t.Fatalf("the host's own mTLS connection fails: %v", err)
	}
	addr := p.client.ReattachConfig().Addr
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":               insecure.NewCredentials(),
		"TLS without client cert": credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}),
	} {
		conn, err := grpc.NewClient("passthrough:///plugin", grpc.WithTransportCredentials(creds),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, addr.Network(), addr.String())
			}))
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = registryv1.NewRegistryClient(conn).Describe(cctx, &registryv1.DescribeRequest{})
		ccancel()
		conn.Close()
		if err == nil {
			t.Errorf("%s connection to the plugin was accepted", name)
		}
	}
}

func TestDescribeReportsOptions(t *testing.T) {
	log, _ := testLogger(t)
	desc, err := Describe(context.Background(), BinaryPath(pluginDir, "synthetic"), "", log)
	if err != nil {
		t.Fatal(err)
	}
	if desc.GetKind() != "synthetic" || desc.GetVersion() != synthetic.Version {
		t.Errorf("describe %v", desc)
	}
	opts := map[string]*registryv1.OptionSpec{}
	for _, o := range desc.GetOptions() {
		opts[o.GetName()] = o
	}
	if o := opts["token"]; o == nil || !o.GetSecret() {
		t.Errorf("token option %v is not secret", o)
	}
	if o := opts["services"]; o == nil || o.GetType() != registryv1.OptionType_OPTION_TYPE_INT || o.GetDefaultValue() != "10" {
		t.Errorf("services option %v", o)
	}
	// Every option the synthetic plugin declares must arrive, with nothing added or lost.
	want := synthetic.New().Describe().Options
	if got := slices.Sorted(maps.Keys(opts)); len(got) != len(want) {
		t.Errorf("options %v, want the %d the plugin declares", got, len(want))
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
