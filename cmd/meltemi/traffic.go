package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
	"github.com/meltemi-mesh/meltemi/sync/xds"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/controller"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
)

// trafficFlags configure the traffic translator and the xDS server.
type trafficFlags struct {
	enabled        bool
	xdsListen      string
	xdsCluster     string
	efNamespace    string
	watchNamespace string
	proxySelector  string
	proxy          string
	metaProxy      string
	exportNS       string
	clusterDomain  string
	meshConfig     string
	readSecrets    bool
	tlsCert        string
	tlsKey         string
	clientCA       string
}

// defaultXDSPort is Meltemi's xDS port; Istio's control plane uses 15010 and 15012.
const defaultXDSPort = 18010

func (f *trafficFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.enabled, "traffic", true, "translate MetaRouters into EnvoyFilters and serve their routes over xDS")
	fs.StringVar(&f.xdsListen, "xds-listen", fmt.Sprintf(":%d", defaultXDSPort), "address of the xDS (RDS) server")
	fs.StringVar(&f.xdsCluster, "xds-cluster", traffic.DefaultXDSCluster, "static Envoy cluster, defined in the proxies' bootstrap (the chart's bootstrap override), "+
		"through which MetaProtocol proxies reach the xDS server")
	fs.StringVar(&f.efNamespace, "envoyfilter-namespace", traffic.DefaultNamespace, "namespace of the EnvoyFilters; Istio's root namespace reaches every namespace")
	fs.StringVar(&f.watchNamespace, "traffic-watch-namespace", "", "read MetaRouters, ApplicationProtocols, DestinationRules and ServiceEntries from this namespace only (default: all)")
	fs.StringVar(&f.proxySelector, "metaprotocol-proxy-selector", "",
		"labels (k=v,…) of workloads whose proxy carries the MetaProtocol filter; MetaProtocol EnvoyFilters select only them. "+
			"Empty: no proxy is selected, and MetaProtocol EnvoyFilters go only where --proxy is a MetaProtocol profile")
	fs.StringVar(&f.proxy, "proxy", proxies.DefaultStock, "profile of the proxies EnvoyFilters reach unless they select MetaProtocol proxies: "+
		"the stock istio-proxy of the mesh's Istio, or a MetaProtocol profile where every proxy runs the MetaProtocol image; "+
		"a filter the profile lacks is never sent (known: "+strings.Join(proxies.Names(), ", ")+")")
	fs.StringVar(&f.metaProxy, "metaprotocol-proxy", proxies.DefaultMetaProtocol, "profile of the proxies --metaprotocol-proxy-selector selects")
	fs.StringVar(&f.exportNS, "envoyfilter-export-namespaces", "",
		"namespaces (a,b,… or *) besides --envoyfilter-namespace that a MetaRouter's exportTo may put EnvoyFilters in, as Aeraki does; the EnvoyFilter writer then covers all namespaces")
	fs.StringVar(&f.meshConfig, "mesh-config", "istio-system/istio",
		"namespace/name of Istio's mesh config ConfigMap, whose access log and tracing settings MetaProtocol proxies get; empty: Istio's defaults")
	fs.BoolVar(&f.readSecrets, "redis-secrets", false, "read the Secrets RedisServices and RedisDestinations name for Redis passwords (watches Secrets); "+
		"false: their secret auth is reported and the port left plain TCP")
	fs.StringVar(&f.clusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster's Services, completing short host names of traffic rules")
	fs.StringVar(&f.tlsCert, "xds-tls-cert", "", "PEM certificate of the xDS server; with --xds-tls-key enables TLS")
	fs.StringVar(&f.tlsKey, "xds-tls-key", "", "PEM private key of the xDS server")
	fs.StringVar(&f.clientCA, "xds-client-ca", "", "PEM CA bundle; when set, xDS clients must present a certificate it signed (mutual TLS)")
}

// trafficPart is the running traffic side of the host: translator, EnvoyFilter writer and
// xDS server. Its zero value (traffic disabled) does nothing and is always ready.
type trafficPart struct {
	ctrl *controller.Controller
	rec  *synckube.Reconciler
	reg  *prometheus.Registry // the EnvoyFilter writer's metrics, labelled writer="traffic"
	log  *slog.Logger
	run  func(name string, fn func() error)
}

// startTraffic starts the translator and the xDS server on every replica; the EnvoyFilter
// writer starts with lead. recorder may be nil.
func startTraffic(ctx context.Context, f *trafficFlags, dyn dynamic.Interface, kube kubernetes.Interface,
	reg *prometheus.Registry, log *slog.Logger, goRun func(name string, fn func() error), leading func() bool) (*trafficPart, error) {
	if !f.enabled {
		return &trafficPart{}, nil
	}
	log = log.With("component", "traffic")
	sel, err := parseSelector(f.proxySelector)
	if err != nil {
		return nil, fmt.Errorf("--metaprotocol-proxy-selector: %w", err)
	}
	lis, err := net.Listen("tcp", f.xdsListen)
	if err != nil {
		return nil, fmt.Errorf("--xds-listen: %w", err)
	}
	cluster := f.xdsCluster
	tlsCfg, err := xdsTLS(f)
	if err != nil {
		lis.Close()
		return nil, err
	}
	srv, err := xds.New(xds.Config{Logger: log, Registerer: reg, TLS: tlsCfg})
	if err != nil {
		lis.Close()
		return nil, err
	}
	var exports []string
	for _, ns := range strings.Split(f.exportNS, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			exports = append(exports, ns)
		}
	}
	opts := traffic.Options{Namespace: f.efNamespace, ProxySelector: sel, XDSCluster: cluster, ClusterDomain: f.clusterDomain, ExportNamespaces: exports,
		Proxy: f.proxy, MetaProtocolProxy: f.metaProxy}
	if err := opts.Validate(); err != nil {
		lis.Close()
		return nil, err
	}
	// The EnvoyFilter writer is a reconciler of its own (another namespace, its own owner label);
	// its metrics go to a registry of their own, labelled, next to those of the main writer.
	treg := prometheus.NewRegistry()
	rec, err := synckube.New(synckube.Config{
		Client: dyn, Kinds: []synckube.Kind{synckube.EnvoyFilterKind()}, Namespace: opts.WriterNamespace(),
		OwnerLabels: traffic.OwnerLabels(), Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"writer": "traffic"}, treg),
		Logger: log.With("component", "traffic-sync"),
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	var mesh types.NamespacedName
	if f.meshConfig != "" {
		ns, name, ok := strings.Cut(f.meshConfig, "/")
		if !ok || ns == "" || name == "" {
			lis.Close()
			return nil, fmt.Errorf("--mesh-config %q: want namespace/name", f.meshConfig)
		}
		mesh = types.NamespacedName{Namespace: ns, Name: name}
	}
	ctrl, err := controller.New(controller.Config{
		Client: dyn, Writer: rec, Routes: srv, Options: opts, WatchNamespace: f.watchNamespace, MeshConfig: mesh,
		Recorder: newEventRecorder(ctx, kube).Event, Leading: leading, ReadSecrets: f.readSecrets, Registerer: reg, Logger: log,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	goRun("xds server", func() error { return srv.Serve(ctx, lis) })
	goRun("traffic controller", func() error { return ctrl.Run(ctx) })
	log.Info("traffic translator started", "xdsListen", lis.Addr().String(), "xdsCluster", cluster,
		"envoyFilterNamespace", opts.WithDefaults().Namespace, "proxySelector", f.proxySelector, "tls", tlsCfg != nil)
	return &trafficPart{ctrl: ctrl, rec: rec, reg: treg, log: log, run: goRun}, nil
}

// lead starts writing EnvoyFilters (and MetaRouter statuses); call it when this replica leads.
func (p *trafficPart) lead(ctx context.Context) {
	if p.rec == nil {
		return
	}
	p.run("traffic writer", func() error { return p.rec.Run(ctx) })
	p.ctrl.Resync()
}

// ready reports whether the first translation has been handed over and, on the leader, the
// EnvoyFilter writer's caches are synced.
func (p *trafficPart) ready(leading bool) error {
	if p.ctrl == nil {
		return nil
	}
	if !p.ctrl.Synced() {
		return errors.New("traffic rules not translated yet")
	}
	if leading && !p.rec.Synced() {
		return errors.New("EnvoyFilter caches not synced yet")
	}
	return nil
}

// gatherer adds the traffic writer's metrics to reg's.
func (p *trafficPart) gatherer(reg *prometheus.Registry) prometheus.Gatherer {
	if p.reg == nil {
		return reg
	}
	return prometheus.Gatherers{reg, p.reg}
}

// xdsTLS builds the xDS server's TLS configuration from the flags; nil for plaintext.
func xdsTLS(f *trafficFlags) (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" {
		if f.clientCA != "" {
			return nil, errors.New("--xds-client-ca needs --xds-tls-cert and --xds-tls-key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert/--xds-tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return nil, fmt.Errorf("--xds-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--xds-client-ca: no certificate in %s", f.clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// parseSelector parses a label selector flag, "k=v,k2=v2" (empty string: empty selector).
func parseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("selector %q: want key=value pairs separated by commas", s)
		}
		out[k] = v
	}
	return out, nil
}
