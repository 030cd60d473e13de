// Package etcd is Meltemi's registry plugin for Apache Dubbo services registered in etcd
// (Dubbo's etcd3 registry): one key per provider, /<root>/<interface>/providers/<URL-encoded
// provider URL>, usually bound to the provider's lease. It is written only against the SDK.
package etcd

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
	"github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"
)

// Version is reported by Describe; release builds set it with -ldflags -X.
var Version = "0.1.0-dev"

// Option names.
const (
	optRoot         = "root"
	optHostTemplate = "hostTemplate"
	optDialTimeout  = "dialTimeout"
	optUsername     = "username"
	optPassword     = "password"
)

var options = []sdk.Option{
	{Name: optRoot, Type: sdk.String, Default: "dubbo", Description: "Dubbo registry root: providers are read from /<root>/<interface>/providers/."},
	{Name: optHostTemplate, Type: sdk.String, Default: dubbo.DefaultHostTemplate,
		Description: "Go template of a service's host, over .Interface, .Group, .Version, .Application and .Protocol (the last four when all providers share them), as in the ZooKeeper and Nacos plugins; e.g. \"{{.Interface}}.dubbo.svc\"."},
	{Name: optDialTimeout, Type: sdk.Duration, Default: "5s", Description: "Timeout for connecting to etcd and for each read."},
	{Name: optUsername, Type: sdk.String, Secret: true, Description: "etcd user; needs password."},
	{Name: optPassword, Type: sdk.String, Secret: true, Description: "etcd password; needs username."},
}

// config is a validated configuration.
type config struct {
	registry       string
	endpoints      []string
	root           string // without slashes at either end
	host           *hosttemplate.Template
	dialTimeout    time.Duration
	user, password string // never log these
}

// prefix is the key prefix every provider key starts with.
func (c *config) prefix() string { return "/" + c.root + "/" }

// Plugin is the etcd registry plugin. Use New.
type Plugin struct {
	mu  sync.Mutex
	cfg *config
}

// New returns the plugin, ready for sdk.Serve.
func New() sdk.Plugin { return &Plugin{} }

// Describe implements sdk.Plugin.
func (p *Plugin) Describe() sdk.Description {
	return sdk.Description{Kind: "etcd", Version: Version, Capabilities: []string{"dubbo-interface"}, Options: options}
}

// Configure implements sdk.Plugin. The address is a comma-separated list of etcd endpoints,
// "host:port" or "http(s)://host:port".
func (p *Plugin) Configure(_ context.Context, cfg sdk.Config) error {
	o := sdk.NewOptions(options, cfg)
	c := &config{registry: cfg.Registry, dialTimeout: o.Duration(optDialTimeout)}
	var err error
	if c.host, err = dubbo.ParseHostTemplate(optHostTemplate, o.String(optHostTemplate)); err != nil {
		o.Fail(optHostTemplate, err.Error())
	}
	if c.endpoints, err = parseEndpoints(cfg.Address); err != nil {
		o.Fail("address", err.Error())
	}
	c.root = strings.Trim(o.String(optRoot), "/")
	if c.root == "" || strings.Contains(c.root, "//") {
		o.Fail(optRoot, fmt.Sprintf("%q is not a key path", o.String(optRoot)))
	}
	if c.dialTimeout == 0 {
		c.dialTimeout = 5 * time.Second
	}
	c.user, c.password = o.String(optUsername), o.String(optPassword)
	if (c.user == "") != (c.password == "") {
		o.Fail(optUsername, "username and password go together")
	}
	if err := o.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
	return nil
}

func parseEndpoints(address string) ([]string, error) {
	var out []string
	for ep := range strings.SplitSeq(address, ",") {
		if ep = strings.TrimSpace(ep); ep == "" {
			continue
		}
		hostport := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("endpoint %q is not host:port or an http(s) URL", ep)
			}
			hostport = u.Host
		}
		if !strings.Contains(hostport, ":") {
			return nil, fmt.Errorf("endpoint %q has no port", ep)
		}
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("is required: comma-separated etcd endpoints such as 127.0.0.1:2379")
	}
	return out, nil
}

// Watch implements sdk.Plugin.
func (p *Plugin) Watch(ctx context.Context, e sdk.Emitter) error {
	p.mu.Lock()
	c := p.cfg // the SDK calls Watch only after a successful Configure
	p.mu.Unlock()
	w, err := newWatcher(c, e)
	if err != nil {
		return err
	}
	defer w.close()
	return w.run(ctx)
}
