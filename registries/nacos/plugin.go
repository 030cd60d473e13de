// Package nacos is Meltemi's registry plugin for Nacos: it lists the services of the selected
// namespaces and groups, subscribes to each (instances are pushed, not polled) and reports
// them as mesh services. Dubbo providers registered as providers:<interface>:<version>:<group>
// are mapped like the ZooKeeper plugin's interface-level services. See README.md.
package nacos

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Version is the plugin's version, reported by Describe. Release builds set it with
// -ldflags "-X github.com/meltemi-mesh/meltemi/registries/nacos.Version=…".
var Version = "0.1.0-dev"

// Option names.
const (
	optNamespaces        = "namespaces"
	optGroups            = "groups"
	optClusters          = "clusters"
	optListInterval      = "listInterval"
	optRecoveryGrace     = "recoveryGrace"
	optTimeout           = "timeout"
	optHostTemplate      = "hostTemplate"
	optDubboHostTemplate = "dubboHostTemplate"
	optDefaultProtocol   = "defaultProtocol"
	optContextPath       = "contextPath"
	optGRPCPortOffset    = "grpcPortOffset"
	optTLS               = "tls"
	optTLSCAFile         = "tlsCAFile"
	optTLSSkipVerify     = "tlsInsecureSkipVerify"
	optUsername          = "username"
	optPassword          = "password"
	optAccessKey         = "accessKey"
	optSecretKey         = "secretKey"
)

const (
	defaultPort       = 8848
	defaultGRPCOffset = 1000 // Nacos 2.x serves gRPC on the HTTP port + 1000
	// defaultListInterval bounds how long a new service waits to be found (the protocol has
	// no signal for it). A listing is a request or two per namespace and group: for 1,000
	// services, 3.4 ms of the server's CPU, 0.7% of a core at this interval
	// (BenchmarkServiceListing in BENCHMARKS.md).
	defaultListInterval  = 500 * time.Millisecond
	minListInterval      = 100 * time.Millisecond
	defaultRecoveryGrace = 30 * time.Second
	defaultTimeout       = 5 * time.Second
	defaultProtocol      = "tcp"
	defaultContextPath   = "/nacos"
	publicNamespace      = "public"
	defaultGroup         = "DEFAULT_GROUP"
	allSelector          = "*"
	maxListInterval      = 10 * time.Minute
)

var options = []sdk.Option{
	{Name: optNamespaces, Type: sdk.String, Default: publicNamespace,
		Description: "Namespace IDs to import, comma-separated; \"*\" for every namespace (needs the Nacos console API). " +
			"Groups per namespace with \"ns:group1,group2\", entries separated by ';', e.g. \"public:DEFAULT_GROUP,orders;dev\". " +
			"Namespaces without their own groups use the groups option."},
	{Name: optGroups, Type: sdk.List, Default: defaultGroup,
		Description: "Groups to import in namespaces that do not name their own; \"*\" for every group (needs the Nacos console API /v1/ns/catalog/services)."},
	{Name: optClusters, Type: sdk.List,
		Description: "Only instances of these Nacos clusters; empty for all clusters."},
	{Name: optListInterval, Type: sdk.Duration, Default: defaultListInterval.String(),
		Description: "How often the service lists are read to find new and removed services (instances are pushed). 100ms to 10m."},
	{Name: optRecoveryGrace, Type: sdk.Duration, Default: defaultRecoveryGrace.String(),
		Description: "After the connection to Nacos comes back, instances and services that are missing are kept this long before they are removed, " +
			"so that applications can register again after a server restart. 0 removes at once."},
	{Name: optTimeout, Type: sdk.Duration, Default: defaultTimeout.String(),
		Description: "Timeout of one request to Nacos."},
	{Name: optHostTemplate, Type: sdk.String, Default: defaultHostTemplate,
		Description: "Go text/template giving the host of a service from .Service, .Group and .Namespace (the namespace ID). " +
			"The result is lower-cased and sanitised into a DNS name; a service whose result is empty or invalid is rejected."},
	{Name: optDubboHostTemplate, Type: sdk.String, Default: defaultDubboHostTemplate,
		Description: "Go text/template giving the host of a Dubbo interface (services named providers:<interface>:<version>:<group>) from " +
			".Interface, .Group, .Version, .Application and .Protocol; a field is empty when the providers disagree on it. As in the ZooKeeper plugin."},
	{Name: optDefaultProtocol, Type: sdk.String, Default: defaultProtocol,
		Description: "Protocol of instances whose metadata has no \"protocol\" (Spring Cloud services: set http). Dubbo providers default to dubbo."},
	{Name: optContextPath, Type: sdk.String, Default: defaultContextPath,
		Description: "Context path of the Nacos HTTP API."},
	{Name: optGRPCPortOffset, Type: sdk.Int, Default: strconv.Itoa(defaultGRPCOffset),
		Description: "The Nacos 2.x gRPC port is the HTTP port plus this offset."},
	{Name: optTLS, Type: sdk.Bool, Default: "false",
		Description: "Connect with TLS (HTTPS and gRPC over TLS)."},
	{Name: optTLSCAFile, Type: sdk.String,
		Description: "PEM file of the CAs that sign the server's certificate; empty for the system's."},
	{Name: optTLSSkipVerify, Type: sdk.Bool, Default: "false",
		Description: "Do not verify the server's certificate (tests only)."},
	{Name: optUsername, Type: sdk.String, Secret: true, Description: "Nacos user (Nacos authentication); needs password."},
	{Name: optPassword, Type: sdk.String, Secret: true, Description: "Password of the Nacos user."},
	{Name: optAccessKey, Type: sdk.String, Secret: true, Description: "Access key (Alibaba Cloud RAM authentication, e.g. MSE); needs secretKey."},
	{Name: optSecretKey, Type: sdk.String, Secret: true, Description: "Secret key belonging to accessKey."},
}

// server is one Nacos server address.
type server struct {
	host string
	port int
}

func (s server) String() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// credentials are never logged, and never put into errors or events.
type credentials struct {
	username, password   string
	accessKey, secretKey string
}

// config is a validated configuration.
type config struct {
	registry        string
	servers         []server
	contextPath     string
	grpcOffset      int
	tls             bool
	tlsCAFile       string
	tlsSkipVerify   bool
	sel             selection
	clusters        map[string]bool // nil: every cluster
	listInterval    time.Duration
	recoveryGrace   time.Duration
	timeout         time.Duration
	hosts           *hostTemplates
	defaultProtocol string
	creds           credentials
}

// Plugin is the Nacos registry plugin. Use New.
type Plugin struct {
	mu  sync.Mutex
	cfg *config

	// newRegistry connects to Nacos; tests replace it.
	newRegistry func(ctx context.Context, cfg *config) (registry, error)
	stats       watchStats
}

// watchStats are counters of a running watch, read by tests and benchmarks.
type watchStats struct {
	subscriptions atomic.Int64 // subscriptions held now
	listings      atomic.Int64 // listing passes that succeeded
	verifications atomic.Int64 // subscriptions renewed to check them
	snapshots     atomic.Int64
}

// New returns the plugin, ready to be served with sdk.Serve.
func New() sdk.Plugin { return &Plugin{newRegistry: dialNacos} }

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{
		Kind:         "nacos",
		Version:      Version,
		Capabilities: []string{"dubbo-interface", "push"},
		Options:      options,
		// Two Nacos services with one host can only be host templates that do not tell them
		// apart (Dubbo providers of one interface are one service already).
		UniqueHosts: true,
	}
}

// Configure implements sdk.Plugin. The address is a comma-separated host[:port] list
// (port 8848 by default), optionally with an http:// or https:// scheme.
func (p *Plugin) Configure(_ context.Context, cfg sdk.Config) error {
	o := sdk.NewOptions(options, cfg)
	c := &config{registry: cfg.Registry}

	c.tls = o.Bool(optTLS)
	var err error
	var httpsScheme bool
	if c.servers, httpsScheme, err = parseAddress(cfg.Address); err != nil {
		o.Fail("address", err.Error())
	}
	c.tls = c.tls || httpsScheme
	c.tlsCAFile = o.String(optTLSCAFile)
	c.tlsSkipVerify = o.Bool(optTLSSkipVerify)
	if c.tlsCAFile != "" {
		if _, err := os.Stat(c.tlsCAFile); err != nil {
			o.Fail(optTLSCAFile, "cannot be read: "+err.Error())
		}
	}
	if (c.tlsCAFile != "" || c.tlsSkipVerify) && !c.tls {
		o.Fail(optTLS, "must be true (or the address https://) when tlsCAFile or tlsInsecureSkipVerify is set")
	}

	c.contextPath = "/" + strings.Trim(o.String(optContextPath), "/")
	if strings.ContainsAny(c.contextPath, "?# ") {
		o.Fail(optContextPath, fmt.Sprintf("%q is not a URL path", o.String(optContextPath)))
	}
	c.grpcOffset = o.Int(optGRPCPortOffset)
	if c.grpcOffset < 0 || c.grpcOffset > 60000 {
		o.Fail(optGRPCPortOffset, fmt.Sprintf("%d is outside 0 to 60000", c.grpcOffset))
	}
	for _, s := range c.servers {
		if s.port+c.grpcOffset > 65535 {
			o.Fail(optGRPCPortOffset, fmt.Sprintf("gives server %s a gRPC port above 65535", s))
			break
		}
	}

	if c.sel, err = parseSelection(o.String(optNamespaces), o.List(optGroups)); err != nil {
		field := optNamespaces
		if se, ok := err.(selectionError); ok {
			field = se.field
		}
		o.Fail(field, err.Error())
	}
	if clusters := o.List(optClusters); len(clusters) > 0 {
		c.clusters = make(map[string]bool, len(clusters))
		for _, cl := range clusters {
			c.clusters[cl] = true
		}
	}

	// Unset durations take their defaults from the option list; "0" is an explicit value.
	c.listInterval = o.Duration(optListInterval)
	if c.listInterval < minListInterval || c.listInterval > maxListInterval {
		o.Fail(optListInterval, fmt.Sprintf("%s is outside %s to %s", c.listInterval, minListInterval, maxListInterval))
	}
	c.recoveryGrace = o.Duration(optRecoveryGrace)
	c.timeout = o.Duration(optTimeout)
	if c.timeout < 100*time.Millisecond || c.timeout > 5*time.Minute {
		o.Fail(optTimeout, fmt.Sprintf("%s is outside 100ms to 5m", c.timeout))
	}

	if c.hosts, err = newHostTemplates(o.String(optHostTemplate), o.String(optDubboHostTemplate)); err != nil {
		if te, ok := err.(templateError); ok {
			o.Fail(te.field, te.Error())
		} else {
			o.Fail(optHostTemplate, err.Error())
		}
	}

	c.defaultProtocol = strings.ToLower(o.String(optDefaultProtocol))
	if !catalog.IsProtocol(c.defaultProtocol) {
		o.Fail(optDefaultProtocol, fmt.Sprintf("%q is not a lower-case token such as tcp, http, grpc or dubbo", o.String(optDefaultProtocol)))
	}

	c.creds = credentials{
		username: o.String(optUsername), password: o.String(optPassword),
		accessKey: o.String(optAccessKey), secretKey: o.String(optSecretKey),
	}
	pairs := [][2]string{{optUsername, optPassword}, {optAccessKey, optSecretKey}}
	vals := map[string]string{optUsername: c.creds.username, optPassword: c.creds.password, optAccessKey: c.creds.accessKey, optSecretKey: c.creds.secretKey}
	for _, pair := range pairs {
		a, b := vals[pair[0]], vals[pair[1]]
		switch {
		case a != "" && b == "":
			o.Fail(pair[1], "is required when "+pair[0]+" is set")
		case a == "" && b != "":
			o.Fail(pair[0], "is required when "+pair[1]+" is set")
		}
	}

	if err := o.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
	return nil
}

// parseAddress splits "h1:8848,https://h2" into servers; https anywhere asks for TLS.
func parseAddress(address string) (servers []server, https bool, err error) {
	address = strings.TrimSpace(address)
	if address == "" {
		return nil, false, fmt.Errorf("is required: a comma-separated host[:port] list")
	}
	for item := range strings.SplitSeq(address, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		hostport := item
		if scheme, rest, ok := strings.Cut(item, "://"); ok {
			switch strings.ToLower(scheme) {
			case "http":
			case "https":
				https = true
			default:
				return nil, false, fmt.Errorf("server %q: scheme %q is not http or https", item, scheme)
			}
			hostport = strings.TrimRight(rest, "/")
		}
		if strings.ContainsAny(hostport, "/?#@ ") {
			return nil, false, fmt.Errorf("server %q is not host[:port]", item)
		}
		host, portText, err := net.SplitHostPort(hostport)
		if err != nil {
			host, portText = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), strconv.Itoa(defaultPort)
		}
		if host == "" || strings.ContainsAny(host, "[]") {
			return nil, false, fmt.Errorf("server %q has no valid host", item)
		}
		port, err := strconv.Atoi(portText)
		if err != nil || port < 1 || port > 65535 {
			return nil, false, fmt.Errorf("server %q: port %q is not a number from 1 to 65535", item, portText)
		}
		servers = append(servers, server{host: host, port: port})
	}
	if len(servers) == 0 {
		return nil, false, fmt.Errorf("%q names no server", address)
	}
	return servers, https, nil
}

func (p *Plugin) config() *config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Watch implements sdk.Plugin: it connects, reports a snapshot, then changes, until ctx ends.
func (p *Plugin) Watch(ctx context.Context, e sdk.Emitter) error {
	cfg := p.config() // the SDK calls Watch only after a successful Configure
	w := newWatcher(cfg, e, &p.stats)
	reg, err := p.newRegistry(ctx, cfg)
	if err != nil {
		return fmt.Errorf("nacos registry %s: %w", cfg.registry, err)
	}
	defer reg.Close()
	return w.run(ctx, reg)
}
