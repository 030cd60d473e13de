package nacos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	nacoslog "github.com/nacos-group/nacos-sdk-go/v2/common/logger"
	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/nacos/internal/sdkclient"
)

// registry is what the watcher needs of Nacos. nacosRegistry implements it with
// nacos-sdk-go; the watcher's unit tests use a fake.
type registry interface {
	// Namespaces lists the IDs of every namespace (for the "*" selection).
	Namespaces(ctx context.Context) ([]string, error)
	// Services lists the services of one namespace in the given groups.
	Services(ctx context.Context, namespace string, groups groupSet) ([]serviceID, error)
	// Subscribe asks for the instances of one service: push is called with each new
	// instance list, starting with the current one (possibly before Subscribe returns).
	// push must not block.
	Subscribe(id serviceID, push func([]nacosmodel.Instance)) (unsubscribe func(), err error)
	// Connected reports whether every connection to Nacos is up, and if not, which is down.
	Connected() (bool, string)
	Close()
}

// servicePageSize is the page size of service listings. Large pages keep a listing to a few
// requests; the server answers with names only.
const servicePageSize = 500

// nacosRegistry talks to Nacos through nacos-sdk-go: one naming client (one gRPC connection)
// per namespace, since a client is bound to its namespace.
type nacosRegistry struct {
	cfg     *config
	log     *slog.Logger
	console *console

	mu      sync.Mutex
	clients map[string]naming_client.INamingClient
	closed  bool
}

// sdkLogMu serialises creating naming clients: each one replaces the library's global logger
// with a file logger, which we replace right after with ours.
var sdkLogMu sync.Mutex

func dialNacos(_ context.Context, cfg *config) (registry, error) {
	r := &nacosRegistry{
		cfg: cfg, clients: map[string]naming_client.INamingClient{},
		log: sdk.Logger().With("registry", cfg.registry, "nacos", serverList(cfg.servers)),
	}
	if cfg.sel.needsConsole() {
		var err error
		if r.console, err = newConsole(cfg); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func serverList(servers []server) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

// client returns the naming client of a namespace, creating it on first use.
func (r *nacosRegistry) client(namespace string) (naming_client.INamingClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("registry closed")
	}
	if c := r.clients[namespace]; c != nil {
		return c, nil
	}
	c, err := r.newClient(namespace)
	if err != nil {
		return nil, err
	}
	r.clients[namespace] = c
	return c, nil
}

func (r *nacosRegistry) newClient(namespace string) (naming_client.INamingClient, error) {
	cfg := r.cfg
	cc := constant.ClientConfig{
		NamespaceId: namespace,
		TimeoutMs:   uint64(cfg.timeout.Milliseconds()),
		AppName:     "meltemi",
		// The library logs into a file until we replace its logger, right after creating
		// the client: that file goes into a directory of its own, removed right after. It
		// also writes every instance list it receives into a cache directory, which we never
		// read (a stale cache must not count as the registry's state): pointing it below the
		// null device keeps the writes from happening at all.
		CacheDir:            filepath.Join(os.DevNull, "nacos-cache"),
		LogLevel:            "warn",
		NotLoadCacheAtStart: true,
		// Without this, an empty instance list (the last instance gone) is not passed on.
		UpdateCacheWhenEmpty: true,
		Username:             cfg.creds.username,
		Password:             cfg.creds.password,
		AccessKey:            cfg.creds.accessKey,
		SecretKey:            cfg.creds.secretKey,
		ContextPath:          cfg.contextPath,
		// Appointed: the environment must not switch TLS on or off behind the configuration.
		TLSCfg: constant.TLSConfig{Appointed: true, Enable: cfg.tls, TrustAll: cfg.tlsSkipVerify, CaFile: cfg.tlsCAFile},
	}
	scheme := "http"
	if cfg.tls {
		scheme = "https"
	}
	servers := make([]constant.ServerConfig, len(cfg.servers))
	for i, s := range cfg.servers {
		servers[i] = constant.ServerConfig{Scheme: scheme, ContextPath: cfg.contextPath, IpAddr: s.host, Port: uint64(s.port), GrpcPort: uint64(s.port + cfg.grpcOffset)}
	}
	// The plugin may be ended without notice (the host kills it): nothing may be left behind.
	logDir, err := os.MkdirTemp("", "meltemi-nacos-")
	if err != nil {
		return nil, fmt.Errorf("creating the client library's log directory: %w", err)
	}
	defer os.RemoveAll(logDir)
	cc.LogDir = logDir
	sdkLogMu.Lock()
	defer sdkLogMu.Unlock()
	c, err := sdkclient.New(cc, servers)
	nacoslog.SetLogger(sdkLogger{log: r.log})
	if err != nil {
		return nil, fmt.Errorf("creating the Nacos client for namespace %s: %s", namespace, redact(err.Error()))
	}
	r.log.Debug("Nacos client created", "namespace", namespace)
	return c, nil
}

func (r *nacosRegistry) Namespaces(ctx context.Context) ([]string, error) {
	if r.console == nil {
		return nil, errors.New("no console API configured")
	}
	return r.console.namespaces(ctx)
}

func (r *nacosRegistry) Services(ctx context.Context, namespace string, groups groupSet) ([]serviceID, error) {
	if groups.all {
		if r.console == nil {
			return nil, errors.New("no console API configured")
		}
		return r.console.services(ctx, namespace)
	}
	c, err := r.client(namespace)
	if err != nil {
		return nil, err
	}
	var out []serviceID
	for _, g := range groups.names {
		names, err := listGroup(ctx, c, namespace, g)
		if err != nil {
			return nil, fmt.Errorf("listing group %s: %s", g, redact(err.Error()))
		}
		for _, n := range names {
			out = append(out, serviceID{namespace: namespace, group: g, name: n})
		}
	}
	return out, nil
}

// listGroup reads a group's service list. Pages are not a consistent snapshot on every
// Nacos-protocol server (Polaris orders each page request anew, so pages overlap and miss
// services), and a service missing from a listing counts as gone: a list longer than one page
// is therefore read again as a single page large enough for all of it. Only a server that
// caps the page size is paged through; pages that overlap there make the listing fail rather
// than come back incomplete. The count the server reports is only a size hint, since some
// servers get it wrong.
func listGroup(ctx context.Context, c naming_client.INamingClient, namespace, group string) ([]string, error) {
	page := func(no, size uint32) ([]string, uint32, error) {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		list, err := c.GetAllServicesInfo(vo.GetAllServiceInfoParam{NameSpace: namespace, GroupName: group, PageNo: no, PageSize: size})
		if err != nil {
			return nil, 0, err
		}
		return slices.DeleteFunc(list.Doms, func(n string) bool { return n == "" }), uint32(max(list.Count, 0)), nil
	}
	first, count, err := page(1, servicePageSize)
	if err != nil || len(first) < servicePageSize {
		return first, err
	}
	// A count below what the first page held is wrong, and says nothing about the total.
	counted := count >= uint32(len(first))
	size := max(count, uint32(len(first))) + servicePageSize
	whole, _, err := page(1, size)
	if err != nil || counted && len(whole) < int(size) && len(whole) >= int(count) {
		return whole, err
	}
	// The server caps the page size (or its count is wrong): page through.
	seen := map[string]bool{}
	var out []string
	for no := uint32(1); ; no++ {
		names, _, err := page(no, servicePageSize)
		if err != nil {
			return nil, err
		}
		added := 0
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
				added++
			}
		}
		switch {
		case no > 1 && slices.Equal(names, first):
			return out, nil // a server that ignores paging repeats its first page
		case added < len(names):
			return nil, fmt.Errorf("the server's pages of the service list overlap (page %d repeats %d services): the list is not complete", no, len(names)-added)
		case len(names) < servicePageSize:
			return out, nil
		}
	}
}

func (r *nacosRegistry) Subscribe(id serviceID, push func([]nacosmodel.Instance)) (func(), error) {
	c, err := r.client(id.namespace)
	if err != nil {
		return nil, err
	}
	// No clusters here: the library keys its callbacks by the cluster list as the server
	// echoes it, so cluster filtering is done on the instances instead.
	param := &vo.SubscribeParam{
		ServiceName: id.name,
		GroupName:   id.group,
		SubscribeCallback: func(hosts []nacosmodel.Instance, err error) {
			if err == nil {
				// The library sorts its cached list in place on the next update.
				push(slices.Clone(hosts))
			}
		},
	}
	unsubscribe := func() {
		// Unsubscribe takes back the callback and the library's re-subscribe entry even when
		// the server cannot be told.
		if err := c.Unsubscribe(param); err != nil {
			r.log.Debug("unsubscribing", "service", id.String(), "error", redact(err.Error()))
		}
	}
	if err := c.Subscribe(param); err != nil {
		unsubscribe()
		return nil, fmt.Errorf("subscribing to %s: %s", id, redact(err.Error()))
	}
	return unsubscribe, nil
}

func (r *nacosRegistry) Connected() (bool, string) {
	r.mu.Lock()
	clients := make(map[string]naming_client.INamingClient, len(r.clients))
	for ns, c := range r.clients {
		clients[ns] = c
	}
	r.mu.Unlock()
	var down []string
	for ns, c := range clients {
		if !c.ServerHealthy() {
			down = append(down, ns)
		}
	}
	if len(down) == 0 {
		return true, ""
	}
	slices.Sort(down)
	return false, fmt.Sprintf("no connection to Nacos at %s (namespaces %s)", serverList(r.cfg.servers), strings.Join(down, ", "))
}

func (r *nacosRegistry) Close() {
	r.mu.Lock()
	r.closed = true
	clients := r.clients
	r.clients = nil
	r.mu.Unlock()
	for _, c := range clients {
		c.CloseClient()
	}
}

// sdkLogger takes the client library's log. Its info and debug output (every push, with
// every instance) is dropped; warnings and errors go to our debug level, since the watcher
// reports connection problems itself. Credentials are removed: the library logs request
// parameters and headers on errors.
type sdkLogger struct {
	log *slog.Logger
}

func (l sdkLogger) Info(...any)           {}
func (l sdkLogger) Debug(...any)          {}
func (l sdkLogger) Infof(string, ...any)  {}
func (l sdkLogger) Debugf(string, ...any) {}
func (l sdkLogger) Warn(args ...any)      { l.out("warn", fmt.Sprint(args...)) }
func (l sdkLogger) Error(args ...any)     { l.out("error", fmt.Sprint(args...)) }
func (l sdkLogger) Warnf(f string, args ...any) {
	l.out("warn", fmt.Sprintf(f, args...))
}
func (l sdkLogger) Errorf(f string, args ...any) {
	l.out("error", fmt.Sprintf(f, args...))
}

func (l sdkLogger) out(level, msg string) {
	if strings.HasPrefix(msg, "mkdir cacheDir failed") {
		return // the cache is off on purpose (see newClient)
	}
	l.log.Debug("nacos client: "+clip(redact(msg), 2048), "clientLevel", level)
}

// sensitiveFields matches credential fields as the client library prints them: JSON
// ("accessToken":"…"), query strings (accessToken=…) and header maps (Spas-Signature:[…]).
var sensitiveFields = regexp.MustCompile(`(?i)((?:access_?token|password|secret_?key|access_?key|spas-[a-z-]+|signature|authorization)"?\s*[:=]\s*\[?"?)[^",&\]\s}]*`)

// redact removes credentials from text that leaves the plugin: the configured ones, and
// tokens and signatures the client library obtained or computed, which only their field
// names give away.
func redact(text string) string {
	return sensitiveFields.ReplaceAllString(sdk.Redact(text), "${1}"+protocol.Redacted)
}
