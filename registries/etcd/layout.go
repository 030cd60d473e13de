package etcd

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// providerKey is what a key under the root says.
type providerKey struct {
	iface string // the interface, as in the path
	inst  catalog.Instance
}

// parseKey reads /<root>/<interface>/providers/<URL-encoded provider URL>. Keys of other
// shapes (consumers, configurators, routers, metadata) are not providers: relevant is false.
// A provider key that cannot be used gives an error saying why.
func parseKey(prefix, key string) (p providerKey, relevant bool, err error) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return p, false, nil
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[1] != "providers" || parts[2] == "" {
		return p, false, nil
	}
	if p.iface, ok = keyInterface(prefix, key); !ok {
		return p, true, fmt.Errorf("interface %q is not a valid path segment", parts[0])
	}
	u, err := dubbo.ParseProviderURL(parts[2])
	if err != nil {
		return p, true, err
	}
	if u.Interface != p.iface {
		return p, true, fmt.Errorf("URL is for interface %q, not %q", u.Interface, p.iface)
	}
	p.inst, err = providerInstance(u)
	return p, true, err
}

// keyInterface returns the interface of a provider key; ok is false for other keys.
func keyInterface(prefix, key string) (iface string, ok bool) {
	rest, _ := strings.CutPrefix(key, prefix)
	seg, rest, _ := strings.Cut(rest, "/")
	if !strings.HasPrefix(rest, "providers/") {
		return "", false
	}
	iface, err := url.PathUnescape(seg)
	return iface, err == nil && iface != ""
}

// errNotProvider marks URLs that are legitimately not endpoints (consumers, placeholders).
var errNotProvider = errors.New("not a provider")

// providerInstance applies the Dubbo rules every registry plugin shares, so that a provider
// gets the same labels from etcd as from ZooKeeper and Nacos.
func providerInstance(u dubbo.ProviderURL) (catalog.Instance, error) {
	inst, skip := dubbo.ProviderInstance(u)
	if skip != "" {
		return inst, fmt.Errorf("%w: %s", errNotProvider, skip)
	}
	return inst, nil
}
