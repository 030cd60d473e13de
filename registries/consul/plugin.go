// Package consul is Meltemi's registry plugin for HashiCorp Consul: every service in the
// catalog of one or more datacenters becomes a service whose endpoints are its healthy
// instances. It watches with blocking queries, never by polling. See README.md.
package consul

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// Version is the plugin's version, reported by Describe. Release builds set it with
// -ldflags "-X github.com/meltemi-mesh/meltemi/registries/consul.Version=…".
var Version = "0.1.0-dev"

// Option names.
const (
	optDatacenters      = "datacenters"
	optHostTemplate     = "hostTemplate"
	optDefaultProtocol  = "defaultProtocol"
	optServiceProtocols = "serviceProtocols"
	optIncludeWarning   = "includeWarning"
	optServices         = "services"
	optExcludeServices  = "excludeServices"
	optExcludeLabels    = "excludeLabels"
	optMaxWatches       = "maxWatches"
	optWaitTime         = "waitTime"
	optToken            = "token"
	optTLSCAFile        = "tlsCAFile"
	optTLSCertFile      = "tlsCertFile"
	optTLSKeyFile       = "tlsKeyFile"
	optTLSServerName    = "tlsServerName"
	optTLSInsecure      = "tlsInsecureSkipVerify"
)

const (
	defaultWaitTime = 5 * time.Minute
	// Leaves room under Consul's default http_max_conns_per_client (200) for a second plugin
	// process during a restart and for other clients on the same address.
	defaultMaxWatches = 64
	// Consul caps a blocking query's wait at 10 minutes.
	maxWaitTime = 10 * time.Minute
)

// defaultExcludeLabels are metadata keys that change on every restart of an instance; as
// endpoint labels they would rewrite the ServiceEntry for nothing.
const defaultExcludeLabels = "timestamp,pid,start_time,start-time,started_at,started-at,uptime,build_time,build-time,deploy_time,deploy-time"

var options = []sdk.Option{
	{Name: optDatacenters, Type: sdk.List,
		Description: "Comma-separated datacenters to import. Empty: the datacenter of the agent at the address. Services of the same name in several datacenters share a host (one ServiceEntry, endpoints with the datacenter as locality region) unless hostTemplate uses .Datacenter."},
	{Name: optHostTemplate, Type: sdk.String, Default: defaultHostTemplate,
		Description: "Go text/template giving a service's host from .Service and .Datacenter. The result is lower-cased and sanitised into a DNS name; a service whose result is invalid is rejected."},
	{Name: optDefaultProtocol, Type: sdk.String,
		Description: "Protocol of instances whose service meta (key protocol) or tags (protocol=…) name none, and whose service is not in serviceProtocols. Empty: tcp (opaque)."},
	{Name: optServiceProtocols, Type: sdk.List,
		Description: "Per-service default protocols as name=protocol pairs (e.g. orders=grpc,web=http), used before defaultProtocol."},
	{Name: optIncludeWarning, Type: sdk.Bool, Default: "false",
		Description: "Also import instances whose health checks are in warning (with Consul's warning weight). By default only passing instances are endpoints."},
	{Name: optServices, Type: sdk.List,
		Description: "Comma-separated service name patterns (path.Match globs such as web-*) to import. Empty: every service."},
	{Name: optExcludeServices, Type: sdk.List, Default: "consul",
		Description: "Comma-separated service name patterns never imported; applied after services."},
	{Name: optExcludeLabels, Type: sdk.List, Default: defaultExcludeLabels,
		Description: "Tag and meta keys never turned into endpoint labels (volatile values). Keys protocol and zone are always consumed, not copied."},
	{Name: optMaxWatches, Type: sdk.Int, Default: strconv.Itoa(defaultMaxWatches),
		Description: "Most blocking health queries in flight at once (keep it under the agent's http_max_conns_per_client, 200 by default). With more services than this, watches take turns with shorter waits."},
	{Name: optWaitTime, Type: sdk.Duration, Default: defaultWaitTime.String(),
		Description: "Longest time one blocking query waits for a change (1s to 10m); Consul adds up to 1/16 jitter."},
	{Name: optToken, Type: sdk.String, Secret: true,
		Description: "Consul ACL token; needs service:read and node:read on what is imported (and agent:read to find the agent's datacenter when datacenters is empty)."},
	{Name: optTLSCAFile, Type: sdk.String,
		Description: "PEM file of the CA that signed the agent's HTTPS certificate (needs an https:// address)."},
	{Name: optTLSCertFile, Type: sdk.String,
		Description: "PEM client certificate for agents that verify incoming HTTPS connections; needs tlsKeyFile."},
	{Name: optTLSKeyFile, Type: sdk.String,
		Description: "PEM key of tlsCertFile."},
	{Name: optTLSServerName, Type: sdk.String,
		Description: "Server name to verify the agent's certificate against, when it differs from the address's host."},
	{Name: optTLSInsecure, Type: sdk.Bool, Default: "false",
		Description: "Do not verify the agent's HTTPS certificate. For tests only."},
}

// config is a validated configuration.
type config struct {
	registry string
	// address is host:port; scheme is http or https.
	address, scheme string
	datacenters     []string // empty: the agent's own
	host            *hostTemplate
	defaultProtocol string
	serviceProtos   map[string]string
	includeWarning  bool
	services        []string // glob patterns; empty: all
	excludeServices []string
	excludeLabels   map[string]bool
	maxWatches      int
	waitTime        time.Duration
	// token authenticates every request. Never log it.
	token string
	tls   api.TLSConfig
}

// url is the agent's base URL, for logs and messages.
func (c *config) url() string { return c.scheme + "://" + c.address }

// wanted reports whether a service name passes the services and excludeServices filters.
func (c *config) wanted(name string) bool {
	if len(c.services) > 0 && !matchAny(c.services, name) {
		return false
	}
	return !matchAny(c.excludeServices, name)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Plugin is the Consul registry plugin. Use New.
type Plugin struct {
	mu  sync.Mutex
	cfg *config

	// stats of the running (or last) watch, for tests and benchmarks.
	stats watchStats
}

// New returns the plugin, ready to be served with sdk.Serve.
func New() sdk.Plugin { return &Plugin{} }

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{
		Kind:         "consul",
		Version:      Version,
		Capabilities: []string{"consul-catalog", "health", "multi-datacenter"},
		Options:      options,
	}
}

// Configure implements sdk.Plugin. The address is the HTTP API of a Consul agent:
// host:port, http://host:port or https://host:port (8500, or 8501 for https, when no port).
func (p *Plugin) Configure(_ context.Context, cfg sdk.Config) error {
	c, err := parseConfig(cfg)
	if err != nil {
		return err
	}
	// Build a client now so that unreadable TLS files are reported as configuration errors.
	if _, err := newClient(c); err != nil {
		return sdk.FieldErrors{{Field: tlsField(c), Message: err.Error()}}
	}
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
	return nil
}

func tlsField(c *config) string {
	switch {
	case c.tls.CAFile != "":
		return optTLSCAFile
	case c.tls.CertFile != "":
		return optTLSCertFile
	}
	return "address"
}

func parseConfig(cfg sdk.Config) (*config, error) {
	o := sdk.NewOptions(options, cfg)
	c := &config{registry: cfg.Registry, serviceProtos: map[string]string{}, excludeLabels: map[string]bool{}}

	var err error
	if c.scheme, c.address, err = parseAddress(cfg.Address); err != nil {
		o.Fail("address", err.Error())
	}

	seen := map[string]bool{}
	for _, dc := range o.List(optDatacenters) {
		switch {
		case !isDatacenterName(dc):
			o.Fail(optDatacenters, fmt.Sprintf("%q is not a datacenter name (letters, digits, '-' and '_')", dc))
		case !seen[dc]:
			seen[dc] = true
			c.datacenters = append(c.datacenters, dc)
		}
	}

	if c.host, err = parseHostTemplate(o.String(optHostTemplate)); err != nil {
		o.Fail(optHostTemplate, err.Error())
	}

	if p := strings.ToLower(o.String(optDefaultProtocol)); p != "" {
		if !catalog.IsProtocol(p) {
			o.Fail(optDefaultProtocol, fmt.Sprintf("%q is not a protocol name (lower-case letters, digits, '-' and '_')", p))
		}
		c.defaultProtocol = p
	}
	for _, pair := range o.List(optServiceProtocols) {
		name, proto, ok := strings.Cut(pair, "=")
		name, proto = strings.TrimSpace(name), strings.ToLower(strings.TrimSpace(proto))
		if !ok || name == "" || !catalog.IsProtocol(proto) {
			o.Fail(optServiceProtocols, fmt.Sprintf("%q is not service=protocol", pair))
			continue
		}
		c.serviceProtos[name] = proto
	}

	c.includeWarning = o.Bool(optIncludeWarning)
	c.services = checkPatterns(o, optServices)
	c.excludeServices = checkPatterns(o, optExcludeServices)
	for _, k := range o.List(optExcludeLabels) {
		c.excludeLabels[k] = true
	}

	c.maxWatches = o.Int(optMaxWatches)
	if c.maxWatches < 1 || c.maxWatches > 10000 {
		o.Fail(optMaxWatches, fmt.Sprintf("%d is outside 1 to 10000", c.maxWatches))
	}
	c.waitTime = o.Duration(optWaitTime)
	if c.waitTime < time.Second || c.waitTime > maxWaitTime {
		o.Fail(optWaitTime, fmt.Sprintf("%s is outside 1s to %s", c.waitTime, maxWaitTime))
	}

	c.token = o.String(optToken)
	c.tls = api.TLSConfig{
		CAFile:             o.String(optTLSCAFile),
		CertFile:           o.String(optTLSCertFile),
		KeyFile:            o.String(optTLSKeyFile),
		Address:            o.String(optTLSServerName),
		InsecureSkipVerify: o.Bool(optTLSInsecure),
	}
	if (c.tls.CertFile == "") != (c.tls.KeyFile == "") {
		o.Fail(optTLSCertFile, "tlsCertFile and tlsKeyFile go together")
	}
	if c.scheme == "http" {
		for name, set := range map[string]bool{
			optTLSCAFile: c.tls.CAFile != "", optTLSCertFile: c.tls.CertFile != "",
			optTLSServerName: c.tls.Address != "", optTLSInsecure: c.tls.InsecureSkipVerify,
		} {
			if set {
				o.Fail(name, "needs an https:// address")
			}
		}
	}
	if err := o.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

func checkPatterns(o *sdk.Options, name string) []string {
	patterns := o.List(name)
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			o.Fail(name, fmt.Sprintf("%q is not a valid pattern: %v", p, err))
		}
	}
	return patterns
}

// parseAddress accepts host:port, http://host[:port] and https://host[:port].
func parseAddress(address string) (scheme, hostport string, err error) {
	address = strings.TrimSpace(address)
	if address == "" {
		return "", "", fmt.Errorf("is required: the agent's HTTP API as host:port or http(s)://host:port")
	}
	scheme = "http"
	if s, rest, ok := strings.Cut(address, "://"); ok {
		if s != "http" && s != "https" {
			return "", "", fmt.Errorf("scheme %q is not http or https", s)
		}
		scheme, address = s, rest
	}
	if strings.ContainsAny(address, "/?#@ ") || strings.Count(address, "[") != strings.Count(address, "]") {
		return "", "", fmt.Errorf("%q must be host:port, without path, query or user", address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(address, "["), "]"), "8500"
		if scheme == "https" {
			port = "8501"
		}
	}
	if host == "" || strings.ContainsAny(host, "[]") {
		return "", "", fmt.Errorf("%q has no valid host", address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if _, err := url.Parse(scheme + "://" + net.JoinHostPort(host, port)); err != nil {
		return "", "", fmt.Errorf("%q: %v", address, err)
	}
	return scheme, net.JoinHostPort(host, port), nil
}

// isDatacenterName follows Consul's rule for datacenter names.
func isDatacenterName(s string) bool { return isToken(s, 64, true) }

// isToken reports whether s is 1 to n letters, digits, '-' and '_' (lower case only unless
// upper).
func isToken(s string, n int, upper bool) bool {
	if s == "" || len(s) > n {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || upper && r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (p *Plugin) config() *config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// Watch implements sdk.Plugin: it reports a snapshot of every datacenter's services, then
// changes, until ctx ends.
func (p *Plugin) Watch(ctx context.Context, e sdk.Emitter) error {
	cfg := p.config() // the SDK calls Watch only after a successful Configure
	client, err := newClient(cfg)
	if err != nil {
		return fmt.Errorf("consul registry: %w", err)
	}
	return newWatcher(cfg, client, e, &p.stats).run(ctx)
}
