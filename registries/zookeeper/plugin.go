// Package zookeeper is Meltemi's registry plugin for Apache Dubbo services registered in
// ZooKeeper: interface-level providers under /<root>/<interface>/providers (Dubbo 2.7 and 3)
// and application-level instances under /services/<application> (Dubbo 3). See README.md.
package zookeeper

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
	"github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"
)

// Version is the plugin's version, reported by Describe. Release builds set it with
// -ldflags "-X github.com/meltemi-mesh/meltemi/registries/zookeeper.Version=…".
var Version = "0.1.0-dev"

// Modes select which Dubbo registration models are read.
const (
	ModeInterface   = "interface"
	ModeApplication = "application"
	ModeBoth        = "both"
)

// Option names.
const (
	optRoots          = "roots"
	optMode           = "mode"
	optHostTemplate   = "hostTemplate"
	optSessionTimeout = "sessionTimeout"
	optMapping        = "interfaceMapping"
	optResync         = "resyncInterval"
	optUsername       = "username"
	optPassword       = "password"
)

const (
	defaultSessionTimeout = 15 * time.Second
	defaultResync         = 10 * time.Minute
	minResync             = 10 * time.Second
)

// reservedRootChildren are nodes Dubbo keeps next to interfaces under a root: service name
// mapping, the metadata report and the configuration center.
var reservedRootChildren = map[string]bool{"mapping": true, "metadata": true, "config": true}

// appKeyPrefix starts the key of an application-level service, mappedKeyPrefix that of an
// interface served through the application mapping; a root cannot have either name.
const (
	appKeyPrefix    = "app"
	mappedKeyPrefix = "mapped"
)

// servicesRoot is where Dubbo 3 registers application instances (its default rootPath).
const servicesRoot = "services"

// config is a validated configuration.
type config struct {
	registry       string
	servers        []string // host:port
	chroot         string   // "" or "/a/b"
	roots          []string // without slashes at either end
	mode           string
	host           *hosttemplate.Template
	sessionTimeout time.Duration
	mapInterfaces  bool
	resync         time.Duration // 0: no periodic resync
	// auth is "user:password" for digest authentication, or empty. Never log it.
	auth string
}

func (c *config) interfaces() bool   { return c.mode == ModeInterface || c.mode == ModeBoth }
func (c *config) applications() bool { return c.mode == ModeApplication || c.mode == ModeBoth }
func (c *config) mapping() bool      { return c.applications() && c.mapInterfaces }

// path turns a path below the chroot into a ZooKeeper path.
func (c *config) path(elems ...string) string {
	return c.chroot + "/" + strings.Join(elems, "/")
}

// Plugin is the ZooKeeper registry plugin. Use New.
type Plugin struct {
	mu  sync.Mutex
	cfg *config

	// stats of the running (or last) watch, for tests and benchmarks.
	stats watchStats
	// inject, when set before Watch, runs functions in the watch loop (tests only).
	inject chan func(*watcher)
}

// New returns the plugin, ready to be served with sdk.Serve.
func New() sdk.Plugin { return &Plugin{} }

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{
		Kind:         "zookeeper",
		Version:      Version,
		Capabilities: []string{"dubbo-interface", "dubbo-application"},
		Options:      options,
	}
}

var options = []sdk.Option{
	{Name: optRoots, Type: sdk.List, Default: "dubbo",
		Description: "Comma-separated Dubbo registry roots (the registry group): providers are read from /<root>/<interface>/providers and application mappings from /<root>/mapping."},
	{Name: optMode, Type: sdk.String, Default: ModeInterface,
		Description: "Which Dubbo registrations to import: interface (one service per interface and root), application (Dubbo 3: one service per application under /services), or both."},
	{Name: optHostTemplate, Type: sdk.String, Default: dubbo.DefaultHostTemplate,
		Description: "Go text/template giving a service's host from .Interface, .Group, .Version, .Application and .Protocol (a field is empty when the service's endpoints disagree on it). The result is lower-cased and sanitised into a DNS name; a service whose result is empty or invalid is rejected."},
	{Name: optSessionTimeout, Type: sdk.Duration, Default: defaultSessionTimeout.String(),
		Description: "ZooKeeper session timeout (the server bounds it, by default to 2 to 20 ticks). Within it a reconnect keeps watches; after it a new session re-lists everything."},
	{Name: optMapping, Type: sdk.Bool, Default: "true",
		Description: "In application and both modes, also import each interface that /<root>/mapping maps to applications, as a service whose endpoints are those applications' instances serving it (restricted by /<root>/metadata when present). In both mode an interface with interface-level providers keeps only those."},
	{Name: optResync, Type: sdk.Duration, Default: defaultResync.String(),
		Description: "How often everything is listed again in the running session, to repair changes a lost watch missed; only differences are sent. 0 disables it; otherwise at least 10s."},
	{Name: optUsername, Type: sdk.String, Secret: true,
		Description: "User for ZooKeeper digest authentication; needs password."},
	{Name: optPassword, Type: sdk.String, Secret: true,
		Description: "Password for ZooKeeper digest authentication; needs username."},
}

// Configure implements sdk.Plugin. The address is a comma-separated host:port list with an
// optional chroot suffix, e.g. "zk1:2181,zk2:2181/prod".
func (p *Plugin) Configure(_ context.Context, cfg sdk.Config) error {
	o := sdk.NewOptions(options, cfg)
	c := &config{registry: cfg.Registry}

	var err error
	if c.servers, c.chroot, err = parseAddress(cfg.Address); err != nil {
		o.Fail("address", err.Error())
	}

	seen := map[string]bool{}
	for _, r := range o.List(optRoots) {
		root := strings.Trim(r, "/")
		switch {
		case root == "":
			o.Fail(optRoots, fmt.Sprintf("%q is not a path", r))
		case validPath("/"+root) != nil:
			o.Fail(optRoots, fmt.Sprintf("%q: %v", r, validPath("/"+root)))
		case root == appKeyPrefix || root == mappedKeyPrefix || root == servicesRoot:
			o.Fail(optRoots, fmt.Sprintf("%q is reserved (application-level keys and instances use it)", r))
		case !seen[root]:
			seen[root] = true
			c.roots = append(c.roots, root)
		}
	}
	if len(c.roots) == 0 && !hasFieldError(o, optRoots) {
		o.Fail(optRoots, "needs at least one root")
	}
	for _, a := range c.roots {
		for _, b := range c.roots {
			if strings.HasPrefix(b, a+"/") {
				o.Fail(optRoots, fmt.Sprintf("%q is inside %q; roots must not overlap", b, a))
			}
		}
	}

	switch c.mode = strings.ToLower(o.String(optMode)); c.mode {
	case ModeInterface, ModeApplication, ModeBoth:
	default:
		o.Fail(optMode, fmt.Sprintf("%q is not one of %s, %s, %s", o.String(optMode), ModeInterface, ModeApplication, ModeBoth))
	}

	if c.host, err = dubbo.ParseHostTemplate(optHostTemplate, o.String(optHostTemplate)); err != nil {
		o.Fail(optHostTemplate, err.Error())
	}

	c.sessionTimeout = o.Duration(optSessionTimeout)
	if c.sessionTimeout == 0 && !hasFieldError(o, optSessionTimeout) {
		c.sessionTimeout = defaultSessionTimeout
	}
	if c.sessionTimeout > 0 && (c.sessionTimeout < time.Second || c.sessionTimeout > 10*time.Minute) {
		o.Fail(optSessionTimeout, fmt.Sprintf("%s is outside 1s to 10m", c.sessionTimeout))
	}

	c.mapInterfaces = o.Bool(optMapping)
	c.resync = o.Duration(optResync)
	if c.resync != 0 && c.resync < minResync {
		o.Fail(optResync, fmt.Sprintf("%s is shorter than %s (0 disables the resync)", c.resync, minResync))
	}

	user, pass := o.String(optUsername), o.String(optPassword)
	switch {
	case user == "" && pass == "":
	case user == "":
		o.Fail(optUsername, "is required when password is set")
	case pass == "":
		o.Fail(optPassword, "is required when username is set")
	case strings.Contains(user, ":"):
		o.Fail(optUsername, "must not contain ':'")
	default:
		c.auth = user + ":" + pass
	}

	if err := o.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
	return nil
}

func hasFieldError(o *sdk.Options, field string) bool {
	if err := o.Err(); err != nil {
		for _, fe := range sdk.AsFieldErrors(err) {
			if fe.Field == field {
				return true
			}
		}
	}
	return false
}

// parseAddress splits "h1:2181,h2:2181/chroot" into servers and a chroot. A server without a
// port gets ZooKeeper's 2181.
func parseAddress(address string) (servers []string, chroot string, err error) {
	address = strings.TrimSpace(address)
	if address == "" {
		return nil, "", fmt.Errorf("is required: a comma-separated host:port list, optionally followed by /chroot")
	}
	hosts := address
	if i := strings.IndexByte(address, '/'); i >= 0 {
		hosts, chroot = address[:i], strings.TrimRight(address[i:], "/")
		if chroot != "" {
			if err := validPath(chroot); err != nil {
				return nil, "", fmt.Errorf("chroot %q: %v", address[i:], err)
			}
		}
	}
	for h := range strings.SplitSeq(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port: take the default one, keeping IPv6 brackets balanced.
			host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), "2181"
		}
		if host == "" || strings.ContainsAny(host, "[] ") {
			return nil, "", fmt.Errorf("server %q has no valid host", h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, "", fmt.Errorf("server %q: port %q is not a number from 1 to 65535", h, port)
		}
		servers = append(servers, net.JoinHostPort(host, port))
	}
	if len(servers) == 0 {
		return nil, "", fmt.Errorf("%q names no server", address)
	}
	return servers, chroot, nil
}

// validPath checks a ZooKeeper path the way the server does, for paths we build from
// configuration: absolute, no empty, "." or ".." segments, no trailing slash, no NUL.
func validPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("must start with /")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch {
		case seg == "":
			return fmt.Errorf("has an empty segment")
		case seg == "." || seg == "..":
			return fmt.Errorf("has a relative segment %q", seg)
		case strings.ContainsRune(seg, 0):
			return fmt.Errorf("contains NUL")
		}
	}
	return nil
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
	w.inject = p.inject
	return w.run(ctx)
}
