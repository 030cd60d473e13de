// Package synthetic is a registry plugin that invents its registry: a deterministic set of
// services, optional churn at a chosen rate, optional garbage, and failures on demand (crash,
// hang, closed stream). It exists for benchmarks and failure tests of the plugin system, and
// as a small example of the SDK. The address is ignored.
package synthetic

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Version is reported by Describe.
var Version = "0.1.0-dev"

// Option names.
const (
	OptServices            = "services"
	OptInstancesPerService = "instancesPerService"
	OptDomain              = "domain"
	OptChurnEvents         = "churnEvents"
	OptChurnPerSecond      = "churnPerSecond"
	OptChurnStartFile      = "churnStartFile"
	OptStampChanges        = "stampChanges"
	OptGarbageEvery        = "garbageEvery"
	OptCrashAfter          = "crashAfter"
	OptHangAfter           = "hangAfter"
	OptCloseAfter          = "closeAfter"
	OptToken               = "token"
	OptEchoSecret          = "echoSecret"
)

var options = []sdk.Option{
	{Name: OptServices, Type: sdk.Int, Default: "10", Description: "Number of services, named svc-00000, svc-00001, ..."},
	{Name: OptInstancesPerService, Type: sdk.Int, Default: "3", Description: "Instances per service (addresses 10.0.0.1 upwards, port 20880, protocol dubbo)."},
	{Name: OptDomain, Type: sdk.String, Default: "synthetic.local", Description: "DNS suffix of the service hosts: svc-00000.<domain>."},
	{Name: OptChurnEvents, Type: sdk.Int, Default: "0", Description: "Instance changes to make after the snapshot; 0 with a churnPerSecond means without end."},
	{Name: OptChurnPerSecond, Type: sdk.Int, Default: "0", Description: "Pace of the changes; 0 makes churnEvents changes as fast as the host takes them."},
	{Name: OptChurnStartFile, Type: sdk.String, Description: "Benchmark aid: hold the changes until a file at this path exists (e.g. until the initial state is written)."},
	{Name: OptStampChanges, Type: sdk.Bool, Description: "Benchmark aid: the changed instance carries the time of the change, in Unix nanoseconds, in the label " + LabelChangedAt + "."},
	{Name: OptGarbageEvery, Type: sdk.Int, Default: "0", Description: "Every n-th service carries invalid data: bad instances (not an IP, port 0, port 70000, an oversized label) and, in turn, an empty or an invalid host."},
	{Name: OptCrashAfter, Type: sdk.Duration, Description: "Exit abruptly this long after the watch starts."},
	{Name: OptHangAfter, Type: sdk.Duration, Description: "Freeze the whole process (SIGSTOP) this long after the watch starts."},
	{Name: OptCloseAfter, Type: sdk.Duration, Description: "End the watch with an error this long after it starts."},
	{Name: OptToken, Type: sdk.String, Secret: true, Description: "A credential; unused, except by echoSecret."},
	{Name: OptEchoSecret, Type: sdk.Bool, Description: "Test aid: put the token into a log line, a health message and a rejection, to show that they are redacted."},
}

// LabelChangedAt is the instance label stampChanges sets.
const LabelChangedAt = "meltemi.io/synthetic-changed-at"

// config is a validated configuration.
type config struct {
	registry                          string
	services, instances               int
	domain                            string
	churnEvents, churnPerSecond       int
	churnStartFile                    string
	stampChanges                      bool
	garbageEvery                      int
	crashAfter, hangAfter, closeAfter time.Duration
	token                             string
	echoSecret                        bool
}

// maxInstances keeps generated addresses inside 10.0.0.0/8.
const maxInstances = 1<<24 - 2

func parse(cfg sdk.Config) (*config, error) {
	o := sdk.NewOptions(options, cfg)
	c := &config{
		registry: cfg.Registry, services: o.Int(OptServices), instances: o.Int(OptInstancesPerService),
		domain: strings.ToLower(o.String(OptDomain)), churnEvents: o.Int(OptChurnEvents), churnPerSecond: o.Int(OptChurnPerSecond),
		churnStartFile: o.String(OptChurnStartFile), stampChanges: o.Bool(OptStampChanges),
		garbageEvery: o.Int(OptGarbageEvery), crashAfter: o.Duration(OptCrashAfter), hangAfter: o.Duration(OptHangAfter),
		closeAfter: o.Duration(OptCloseAfter), token: o.String(OptToken), echoSecret: o.Bool(OptEchoSecret),
	}
	for name, v := range map[string]int{OptServices: c.services, OptInstancesPerService: c.instances, OptChurnEvents: c.churnEvents, OptChurnPerSecond: c.churnPerSecond, OptGarbageEvery: c.garbageEvery} {
		if v < 0 {
			o.Fail(name, fmt.Sprintf("%d is negative", v))
		}
	}
	if c.services > 0 && c.instances > maxInstances/c.services {
		o.Fail(OptInstancesPerService, fmt.Sprintf("%d services × %d instances is more than %d addresses", c.services, c.instances, maxInstances))
	}
	if err := catalog.ValidateHost("svc-00000." + c.domain); err != nil {
		o.Fail(OptDomain, fmt.Sprintf("%q does not make valid hosts: %v", c.domain, err))
	}
	if err := o.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Plugin is the synthetic registry. Use New.
type Plugin struct {
	// Log replaces sdk.Logger(), for running the plugin in process without its logs on
	// standard error.
	Log *slog.Logger

	mu  sync.Mutex
	cfg *config
}

func (p *Plugin) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return sdk.Logger()
}

// New returns the plugin, ready for sdk.Serve.
func New() sdk.Plugin { return &Plugin{} }

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{Kind: "synthetic", Version: Version, Capabilities: []string{"churn", "garbage", "failures"}, Options: options}
}

// Configure implements sdk.Plugin.
func (p *Plugin) Configure(_ context.Context, cfg sdk.Config) error {
	c, err := parse(cfg)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
	return nil
}

// Watch implements sdk.Plugin.
func (p *Plugin) Watch(ctx context.Context, e sdk.Emitter) error {
	p.mu.Lock()
	c := p.cfg // the SDK calls Watch only after a successful Configure
	p.mu.Unlock()
	log := p.log() // the host tags forwarded records with the registry
	s := c.state()
	log.Info("synthetic registry serving", "services", c.services, "instancesPerService", c.instances)
	if c.echoSecret {
		log.Info("echoing the token " + c.token)
		e.Reject("token "+c.token, "echoed token "+c.token)
	}
	msg := "synthetic registry connected"
	if c.echoSecret {
		msg += " with token " + c.token
	}
	e.Health(true, msg)
	e.Snapshot(s.services)

	failures := c.failures(ctx, log)
	if c.churnStartFile != "" {
		if err := waitForFile(ctx, c.churnStartFile); err != nil {
			return err
		}
	}
	start := time.Now()
	for k := 0; c.churnEvents == 0 || k < c.churnEvents; k++ {
		if c.services == 0 || c.churnPerSecond == 0 && c.churnEvents == 0 {
			break
		}
		if c.churnPerSecond > 0 {
			due := start.Add(time.Duration(float64(k) / float64(c.churnPerSecond) * float64(time.Second)))
			if err := sleepUntil(ctx, due); err != nil {
				return err
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		stamp := ""
		if c.stampChanges {
			stamp = strconv.FormatInt(time.Now().UnixNano(), 10)
		}
		e.Set(s.churn(c, k, stamp))
	}
	if c.churnEvents > 0 {
		log.Info("synthetic churn done", "events", c.churnEvents, "seconds", time.Since(start).Seconds())
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-failures:
		return err
	}
}

// failures arms the configured failures; closeAfter arrives on the channel, the others act.
func (c *config) failures(ctx context.Context, log *slog.Logger) <-chan error {
	out := make(chan error, 1)
	after := func(d time.Duration, f func()) {
		if d > 0 {
			t := time.AfterFunc(d, f)
			context.AfterFunc(ctx, func() { t.Stop() })
		}
	}
	after(c.crashAfter, func() {
		log.Error("synthetic registry crashing as configured", "crashAfter", c.crashAfter)
		os.Exit(3)
	})
	after(c.hangAfter, func() {
		log.Warn("synthetic registry hanging as configured", "hangAfter", c.hangAfter)
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
	})
	after(c.closeAfter, func() {
		out <- fmt.Errorf("synthetic registry closing its stream after %s as configured", c.closeAfter)
	})
	return out
}

// waitForFile polls for path; a plugin has no other channel from a benchmark than its options.
func waitForFile(ctx context.Context, path string) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// state is the registry content the plugin has reported.
type state struct {
	services []catalog.Service
}

func (c *config) state() *state {
	s := &state{services: make([]catalog.Service, c.services)}
	for i := range s.services {
		s.services[i] = c.service(i)
	}
	return s
}

// Key returns the key of the i-th service.
func Key(i int) string { return fmt.Sprintf("svc-%05d", i) }

func (c *config) service(i int) catalog.Service {
	svc := catalog.Service{Key: Key(i), Host: Key(i) + "." + c.domain, Labels: map[string]string{"app": Key(i)}}
	for j := range c.instances {
		svc.Instances = append(svc.Instances, catalog.Instance{
			Address: address(i*c.instances + j + 1), Port: 20880, Protocol: "dubbo",
			Labels: map[string]string{"version": "1.0.0", "rev": "0"},
		})
	}
	if c.garbageEvery > 0 && i%c.garbageEvery == c.garbageEvery-1 {
		addGarbage(&svc, i/c.garbageEvery)
	}
	return svc
}

// addGarbage adds four bad instances and, for two in three garbage services, breaks the host.
func addGarbage(svc *catalog.Service, g int) {
	good := address(1<<24 - 2)
	svc.Instances = append(svc.Instances,
		catalog.Instance{Address: "not-an-ip", Port: 20880, Protocol: "dubbo"},
		catalog.Instance{Address: good, Port: 0, Protocol: "dubbo"},
		catalog.Instance{Address: good, Port: 70000, Protocol: "dubbo"},
		catalog.Instance{Address: good, Port: 20881, Protocol: "dubbo", Labels: map[string]string{"oversized": strings.Repeat("x", 300), "version": "1.0.0"}},
	)
	switch g % 3 {
	case 1:
		svc.Host = ""
	case 2:
		svc.Host = "Not_A:Host." + svc.Host
	}
}

// churn makes the k-th change: one instance of one service gets a new revision label (and,
// when stamp is set, the label LabelChangedAt). The service is copied, since the emitter owns
// what it was given.
func (s *state) churn(c *config, k int, stamp string) catalog.Service {
	i := k % c.services
	svc := s.services[i]
	if c.instances == 0 {
		return svc
	}
	j := (k / c.services) % c.instances
	insts := append([]catalog.Instance(nil), svc.Instances...)
	insts[j].Labels = map[string]string{"version": "1.0.0", "rev": strconv.Itoa(k + 1)}
	if stamp != "" {
		insts[j].Labels[LabelChangedAt] = stamp
	}
	svc.Instances = insts
	s.services[i] = svc
	return svc
}

func address(n int) string {
	return fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255)
}

// State returns the services a plugin configured with options reports once it has made
// churned changes: what the host should hold when the plugin is done.
func State(registry string, options map[string]string, churned int) ([]catalog.Service, error) {
	c, err := parse(sdk.Config{Registry: registry, Options: options})
	if err != nil {
		return nil, err
	}
	s := c.state()
	for k := range churned {
		s.churn(c, k, "")
	}
	return s.services, nil
}
