package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// listPage bounds one range read of a listing; a listing reads all pages at one revision.
var listPage int64 = 5000

const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// errCompacted means the revision to watch from is gone: the registry must be listed again.
var errCompacted = errors.New("watch revision compacted")

// watcher runs one Watch call: list everything at one revision, report a snapshot, then
// follow the changes from the next revision on.
type watcher struct {
	cfg *config
	e   sdk.Emitter
	log *slog.Logger
	cli *clientv3.Client

	// providers holds the usable providers by interface, then by key.
	providers map[string]map[string]catalog.Instance
}

func newWatcher(c *config, e sdk.Emitter) (*watcher, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: c.endpoints, DialTimeout: c.dialTimeout,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: c.dialTimeout,
		Username: c.user, Password: c.password,
		Logger: zap.NewNop(), // its own log would reach the host as unstructured lines
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return &watcher{cfg: c, e: e, cli: cli, log: sdk.Logger().With("etcd", strings.Join(c.endpoints, ","))}, nil
}

func (w *watcher) close() { _ = w.cli.Close() }

// run lists and watches until ctx ends. Failures are retried with backoff; meanwhile the
// host keeps what was reported.
func (w *watcher) run(ctx context.Context) error {
	backoff := minBackoff
	for {
		rev, err := w.resync(ctx)
		if err == nil {
			backoff = minBackoff
			err = w.watch(ctx, rev+1)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCompacted) {
			w.log.Info("watched revision was compacted; listing again")
			continue
		}
		w.e.Health(false, "etcd: "+err.Error())
		w.log.Warn("etcd registry unavailable; retrying", "error", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// resync lists every key under the root at one revision and reports the whole registry as
// a snapshot; the host writes only what changed since it last knew.
func (w *watcher) resync(ctx context.Context) (int64, error) {
	prefix := w.cfg.prefix()
	end := clientv3.GetPrefixRangeEnd(prefix)
	w.providers = map[string]map[string]catalog.Instance{}
	var rev int64
	for from := prefix; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(listPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := context.WithTimeout(ctx, w.cfg.dialTimeout)
		resp, err := w.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			w.put(string(kv.Key))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	var services []catalog.Service
	for _, iface := range slices.Sorted(maps.Keys(w.providers)) {
		if svc, ok := w.service(iface); ok {
			services = append(services, svc)
		}
	}
	w.e.Health(true, "")
	w.e.Snapshot(services)
	w.log.Info("etcd registry listed", "revision", rev, "services", len(services))
	return rev, nil
}

// watch follows changes from rev until an error. A probe at the dial timeout's pace
// notices an unreachable etcd (the client itself retries quietly) and reports it.
func (w *watcher) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := w.cli.Watch(wctx, w.cfg.prefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	probe := time.NewTicker(w.cfg.dialTimeout)
	defer probe.Stop()
	healthy := true
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				return errors.New("watch ended")
			}
			if resp.CompactRevision != 0 {
				return errCompacted
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			w.apply(resp.Events)
		case <-probe.C:
			pctx, pcancel := context.WithTimeout(ctx, w.cfg.dialTimeout)
			_, err := w.cli.Get(pctx, w.cfg.prefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
			pcancel()
			if ok := err == nil; ok != healthy {
				healthy = ok
				msg := ""
				if err != nil {
					msg = "etcd unreachable: " + err.Error()
				}
				w.e.Health(ok, msg)
			}
		}
	}
}

// apply records a batch of changes and states each changed service once.
func (w *watcher) apply(events []*clientv3.Event) {
	changed := map[string]bool{}
	for _, ev := range events {
		key := string(ev.Kv.Key)
		switch ev.Type {
		case mvccpb.PUT:
			if iface := w.put(key); iface != "" {
				changed[iface] = true
			}
		case mvccpb.DELETE:
			if iface := w.delete(key); iface != "" {
				changed[iface] = true
			}
		}
	}
	for _, iface := range slices.Sorted(maps.Keys(changed)) {
		if svc, ok := w.service(iface); ok {
			w.e.Set(svc)
		} else {
			w.e.Remove(svc.Key)
		}
	}
}

// put records a provider key and returns its interface, or "" when the key is no provider.
func (w *watcher) put(key string) string {
	p, relevant, err := parseKey(w.cfg.prefix(), key)
	switch {
	case !relevant:
		return ""
	case errors.Is(err, errNotProvider):
		w.log.Debug("ignoring non-provider URL", "key", key)
		return ""
	case err != nil:
		w.e.Reject(key, err.Error())
		return ""
	}
	if w.providers[p.iface] == nil {
		w.providers[p.iface] = map[string]catalog.Instance{}
	}
	w.providers[p.iface][key] = p.inst
	return p.iface
}

// delete forgets a provider key and returns its interface, or "" when it was not known.
func (w *watcher) delete(key string) string {
	iface, ok := keyInterface(w.cfg.prefix(), key)
	if _, known := w.providers[iface][key]; !ok || !known {
		return ""
	}
	delete(w.providers[iface], key)
	if len(w.providers[iface]) == 0 {
		delete(w.providers, iface)
	}
	return iface
}

// service builds an interface's service; ok is false when it has no providers or its name
// makes no host (then it is rejected).
func (w *watcher) service(iface string) (svc catalog.Service, ok bool) {
	svc.Key = w.cfg.root + ":" + iface
	provs := w.providers[iface]
	if len(provs) == 0 {
		return svc, false
	}
	for _, key := range slices.Sorted(maps.Keys(provs)) {
		svc.Instances = append(svc.Instances, provs[key])
	}
	host, err := w.cfg.host.Render(dubbo.InterfaceVars(iface, svc.Instances))
	if err != nil {
		w.e.Reject(svc.Key, err.Error())
		return svc, false
	}
	svc.Host = host
	return svc, true
}
