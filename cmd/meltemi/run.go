package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
	"github.com/meltemi-mesh/meltemi/serviceentries"
	"github.com/meltemi-mesh/meltemi/serviceentries/convert"
	"github.com/meltemi-mesh/meltemi/serviceentries/hostguard"
	"github.com/meltemi-mesh/meltemi/serviceentries/serviceregistry"
	"github.com/meltemi-mesh/meltemi/serviceentries/store"
	"github.com/meltemi-mesh/meltemi/serviceentries/vip"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

func pluginProtocol() int { return protocol.Version }

type runFlags struct {
	kubeconfig        string
	configFile        string
	registryNamespace string
	namespace         string
	pluginDir         string
	listen            string
	window            time.Duration
	debounce          time.Duration
	maxDelay          time.Duration
	qps               float64
	burst             int
	workers           int
	logLevel          string
	logFormat         string
	maxInline         int
	portNaming        string
	hostGuard         bool
	vipCIDR           string
	leaderElect       bool
	firstSyncTimeout  time.Duration
	profiling         bool
	leaseNamespace    string
	leaseName         string
	leaseDuration     time.Duration
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then in-cluster configuration")
	fs.StringVar(&f.configFile, "config", "", "YAML file of ServiceRegistry objects; when empty, ServiceRegistries are read from the cluster")
	fs.StringVar(&f.registryNamespace, "registry-namespace", "", "namespace to read ServiceRegistries from (default: all namespaces)")
	fs.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", "meltemi-system"), "namespace the ServiceEntries are written to")
	fs.StringVar(&f.pluginDir, "plugin-dir", defaultPluginDir(), "directories holding meltemi-registry-<kind> plugin binaries, separated by '"+string(os.PathListSeparator)+"' and searched in order")
	fs.StringVar(&f.listen, "listen", ":9090", "address serving /metrics, /healthz and /readyz; empty disables")
	fs.BoolVar(&f.profiling, "profiling", false, "also serve Go's profiles under /debug/pprof/ on --listen (heap, CPU, goroutines)")
	fs.DurationVar(&f.window, "write-window", 100*time.Millisecond, "a host's first change is written at once; its changes within this window after a write are coalesced into one write at the window's end. 0: coalesce by --debounce and --max-delay instead")
	fs.DurationVar(&f.debounce, "debounce", 50*time.Millisecond, "with --write-window=0: quiet time after a registry change before objects are written")
	fs.DurationVar(&f.maxDelay, "max-delay", 500*time.Millisecond, "with --write-window=0: longest a stream of changes may postpone a write")
	fs.Float64Var(&f.qps, "kube-write-qps", 200, "client-side limit on writes per second to the API server")
	fs.IntVar(&f.burst, "kube-write-burst", 400, "burst allowed above --kube-write-qps")
	fs.IntVar(&f.workers, "workers", synckube.DefaultWorkers, "concurrent object writers")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&f.portNaming, "port-naming", convert.PortNamingMetaProtocol,
		"how Dubbo and Thrift ports are named: metaprotocol (tcp-metaprotocol-dubbo-…, the MetaProtocol proxy) or dubbo2istio (tcp-dubbo-…, Envoy's Dubbo and Thrift proxies, as dubbo2istio writes them)")
	fs.BoolVar(&f.hostGuard, "host-guard", true,
		"do not write a host that ServiceEntries Meltemi does not own define (e.g. dubbo2istio's), so no host is in two ServiceEntries")
	fs.IntVar(&f.maxInline, "max-inline-endpoints", convert.DefaultMaxInlineEndpoints, "most endpoints a ServiceEntry carries inline; above, instances become WorkloadEntries")
	fs.StringVar(&f.vipCIDR, "vip-cidr", defaultVIPCIDR, "range virtual IPs are given out from, one per ServiceEntry; empty disables (istiod may then allocate addresses itself)")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader among replicas through a Lease: only the leader writes, standbys keep warm")
	fs.StringVar(&f.leaseNamespace, "leader-election-namespace", envOr("POD_NAMESPACE", "meltemi-system"), "namespace of the leader election Lease")
	fs.StringVar(&f.leaseName, "leader-election-id", "meltemi", "name of the leader election Lease")
	fs.DurationVar(&f.leaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal; a standby takes over after it")
	fs.DurationVar(&f.firstSyncTimeout, "first-sync-timeout", 2*time.Minute,
		"how long /readyz waits for every registry's first snapshot; after it a replica is ready without the registries that have not synced (they are reported, and their objects are not deleted)")
}

// defaultVIPCIDR is next to, not inside, the range istiod allocates ServiceEntry addresses
// from (240.240.0.0/16): two allocators on one range would give two hosts one address, and so
// one listener.
const defaultVIPCIDR = "240.241.0.0/16"

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "meltemi/" + version
	// Reads are served by informers; writes are limited by the reconciler's own bucket.
	cfg.QPS, cfg.Burst = 1000, 2000
	return cfg, nil
}

func newRunCmd() *cobra.Command {
	var f runFlags
	var tf trafficFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the bridge: registry plugins in, ServiceEntries and traffic configuration out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), f, tf, cmd.ErrOrStderr())
		},
	}
	f.register(cmd.Flags())
	tf.register(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}

func run(ctx context.Context, f runFlags, tf trafficFlags, stderr io.Writer) error {
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating metadata client: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var running sync.Map // name → count, of the components not stopped yet
	goRun := func(name string, fn func() error) {
		wg.Add(1)
		n, _ := running.LoadOrStore(name, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		go func() {
			defer wg.Done()
			defer n.(*atomic.Int32).Add(-1)
			if err := fn(); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	// Every replica runs the plugins and builds the desired state, so a standby that becomes
	// leader only has to sync its caches and write the differences; only the leader writes.
	var leading atomic.Bool
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meltemi_leader",
		Help: "1 on the replica that leads (writes objects, statuses and Events), 0 on standbys: join on it to count what every replica reports once.",
	}, func() float64 {
		if leading.Load() {
			return 1
		}
		return 0
	}))
	// The host guard reads ServiceEntries where the host may: everywhere with the traffic
	// translator's ClusterRole, else its namespace.
	guardNS := f.namespace
	if tf.enabled {
		guardNS = tf.watchNamespace
	}
	svc, err := startServices(ctx, &f, guardNS, dyn, meta, kube, reg, log, goRun)
	if err != nil {
		return err
	}
	defer svc.mgr.Stop()
	svc.firstSyncTimeout, svc.leading = f.firstSyncTimeout, leading.Load
	tr, err := startTraffic(ctx, &tf, dyn, kube, reg, log, goRun, leading.Load)
	if err != nil {
		return err
	}
	lead := func(lctx context.Context) {
		leading.Store(true)
		tr.lead(lctx)
		svc.lead(lctx)
	}
	if f.leaderElect {
		goRun("leader election", func() error {
			return electLeader(ctx, kube, f.leaseNamespace, f.leaseName, f.leaseDuration, log, lead)
		})
	} else {
		lead(ctx)
	}
	if err := svc.configure(ctx, &f); err != nil {
		return err
	}

	ready := func() error {
		if err := svc.ready(leading.Load()); err != nil {
			return err
		}
		return tr.ready(leading.Load())
	}
	if f.listen != "" {
		srv, err := serveHTTP(f.listen, tr.gatherer(reg), ready, f.profiling, log)
		if err != nil {
			return err
		}
		defer srv.Shutdown(context.Background()) //nolint:errcheck // best effort at exit
	}
	log.Info("meltemi started", "version", version, "namespace", f.namespace, "pluginDir", f.pluginDir)
	<-ctx.Done()
	svc.mgr.Stop()
	if !waitAtMost(&wg, shutdownGrace) {
		// Such as an informer sleeping out client-go's watch backoff (up to 30 s after an API
		// server outage) without looking at its context. The plugins have stopped; nothing
		// left needs the process.
		var names []string
		running.Range(func(name, n any) bool {
			if n.(*atomic.Int32).Load() > 0 {
				names = append(names, name.(string))
			}
			return true
		})
		slices.Sort(names)
		log.Warn("exiting without waiting longer for components to stop", "waited", shutdownGrace, "components", names)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	log.Info("meltemi stopped")
	return nil
}

// shutdownGrace bounds how long the host waits for its parts to stop after SIGTERM: well
// inside the chart's terminationGracePeriodSeconds (30).
const shutdownGrace = 5 * time.Second

// waitAtMost waits for wg, or d; it reports whether wg was done.
func waitAtMost(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// servicesPart is the registry side of the host: plugins, the controller turning their
// services into ServiceEntries, and the reconciler writing them (on the leader).
type servicesPart struct {
	rec        *synckube.Reconciler
	ctrl       *serviceentries.Controller
	mgr        *serviceregistry.Manager
	configured chan struct{} // closed once the registry configuration is loaded
	// configuredAt is when it was (set before configured is closed).
	configuredAt     time.Time
	firstSyncTimeout time.Duration
	// leading tells whether this replica leads; only the leader writes statuses and Events.
	leading func() bool
	log     *slog.Logger
	run     func(name string, fn func() error)
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	events  record.EventRecorder
}

// startServices builds the registry side and starts its controller; the reconciler starts
// with lead, the plugins with configure.
func startServices(ctx context.Context, f *runFlags, guardNS string, dyn dynamic.Interface, meta metadata.Interface, kube kubernetes.Interface,
	reg *prometheus.Registry, log *slog.Logger, goRun func(name string, fn func() error)) (*servicesPart, error) {
	latency := serviceentries.NewWriteLatency(f.namespace)
	if err := reg.Register(latency.Collector()); err != nil {
		return nil, err
	}
	// The delete policy is the controller's and the writer's: deletes wait per registry.
	policy := &serviceentries.Policy{}
	events := newEventRecorder(ctx, kube)
	rec, err := synckube.New(synckube.Config{
		Client: dyn, Kinds: []synckube.Kind{synckube.ServiceEntryKind(), synckube.WorkloadEntryKind()}, Namespace: f.namespace,
		Workers: f.workers, QPS: float32(f.qps), Burst: f.burst, Registerer: reg, Logger: log.With("component", "sync"),
		OnSynced: latency.ObjectSynced, HoldDelete: policy.HoldsDelete,
		// Names taken by foreign objects and failed writes, as Events on the objects.
		Recorder: events.Event,
	})
	if err != nil {
		return nil, err
	}
	var vips *vip.Allocator
	if f.vipCIDR != "" {
		if vips, err = vip.New(f.vipCIDR); err != nil {
			return nil, fmt.Errorf("--vip-cidr: %w", err)
		}
		if err := serviceentries.SeedVIPs(ctx, dyn, f.namespace, vips); err != nil {
			return nil, err
		}
	}
	protocols, err := convert.ProtocolsFor(f.portNaming)
	if err != nil {
		return nil, fmt.Errorf("--port-naming: %w", err)
	}
	cfg := serviceentries.Config{
		Convert: convert.Options{Namespace: f.namespace, MaxInlineEndpoints: f.maxInline, Protocols: protocols},
		Window:  f.window, Debounce: f.debounce, MaxDelay: f.maxDelay, VIPs: vips, Latency: latency, Logger: log.With("component", "controller"),
		Policy: policy, Cluster: rec, Pacer: rec,
	}
	var hosts *hostguard.Index
	if f.hostGuard {
		if hosts, err = hostguard.New(dyn, meta, guardNS); err != nil {
			return nil, err
		}
		cfg.Hosts = hosts
	}
	ctrl := serviceentries.New(cfg, store.New(), rec)
	if err := ctrl.RegisterMetrics(reg); err != nil {
		return nil, err
	}
	mgr := serviceregistry.NewManager(supervisor.Config{PluginDir: f.pluginDir, Logger: log.With("component", "plugins"), Metrics: supervisor.NewMetrics(reg)}, ctrl)
	goRun("controller", func() error {
		if hosts != nil {
			go hosts.Run(ctx, func(h []string) { ctrl.Recheck(h...) })
			// Decisions on foreign hosts need the complete index.
			if !cache.WaitForCacheSync(ctx.Done(), hosts.Synced) {
				return nil
			}
		}
		ctrl.Run(ctx)
		return nil
	})
	return &servicesPart{rec: rec, ctrl: ctrl, mgr: mgr, configured: make(chan struct{}), log: log, run: goRun, kube: kube, dyn: dyn, events: events}, nil
}

// lead starts writing ServiceEntries; call it when this replica leads.
func (p *servicesPart) lead(ctx context.Context) {
	p.run("reconciler", func() error { return p.rec.Run(ctx) })
}

// configure loads the registries, from the file or, watched, from the cluster, and starts
// their plugins.
func (p *servicesPart) configure(ctx context.Context, f *runFlags) error {
	if f.configFile == "" {
		src := &serviceregistry.ClusterSource{
			Dynamic: p.dyn, Kube: p.kube, Namespace: f.registryNamespace, Manager: p.mgr,
			Counts: p.ctrl.Store().Counts, Rejections: p.mgr.Rejections,
			Conflicts: func(registry string) []v1alpha1.Conflict {
				return serviceentries.Conflicts(registry, p.rec.NameConflicts(), p.ctrl.HostConflicts())
			},
			Logger: p.log.With("component", "registries"), Events: p.events, Leading: p.leading,
		}
		p.configuredAt = time.Now()
		p.run("registry source", func() error { return src.Run(ctx, p.configured) })
		return nil
	}
	srs, err := serviceregistry.LoadFile(f.configFile)
	if err != nil {
		return err
	}
	regs, err := serviceregistry.Resolve(ctx, p.kube, srs)
	if err != nil {
		return err
	}
	p.log.Info("registries loaded from file", "file", f.configFile, "registries", len(regs))
	p.mgr.Apply(ctx, regs)
	p.configuredAt = time.Now()
	close(p.configured)
	return nil
}

// ready reports whether the registries are loaded and have delivered their first snapshots
// and, on the leader, the object caches are synced.
func (p *servicesPart) ready(leading bool) error {
	select {
	case <-p.configured:
	default:
		return errors.New("registry configuration not loaded yet")
	}
	// Readiness means serving: a registry that cannot sync is reported (its status and
	// Events) and, after the first-sync timeout, no longer holds the replica back; its objects
	// stay, deletes wait per registry.
	if !p.ctrl.DeletesAllowed() {
		if pending := p.ctrl.PendingRegistries(); time.Since(p.configuredAt) < p.firstSyncTimeout {
			return fmt.Errorf("waiting for the first snapshot of %s", strings.Join(pending, ", "))
		}
	}
	// A standby is ready when its state is complete; the leader also needs its caches.
	if leading && !p.rec.Synced() {
		return errors.New("object caches not synced yet")
	}
	return nil
}

func serveHTTP(addr string, reg prometheus.Gatherer, ready func() error, profiling bool, log *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	if profiling {
		// Go's profiles (heap, CPU, goroutines) for `go tool pprof http://ADDR/debug/pprof/heap`.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	return srv, nil
}

func envOr(key, def string) string {
	if v, ok := lookupEnv(key); ok && v != "" {
		return v
	}
	return def
}
