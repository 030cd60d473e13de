package etcd

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// providerKey is what a key under the root says.
type providerKey struct {
	iface string // the interface, as in the path
	inst  model.Instance
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

// labelParams are the provider URL parameters that become endpoint labels: stable ones that
// Istio subsets select on. Volatile ones (timestamp, pid) would make labels churn.
var labelParams = []string{"application", "version", "group", "serialization"}

// errNotProvider marks URLs that are legitimately not endpoints (consumers, placeholders).
var errNotProvider = errors.New("not a provider")

func providerInstance(u dubbo.ProviderURL) (model.Instance, error) {
	switch {
	case u.Params["side"] == "consumer", u.Protocol == "empty", u.Protocol == "consumer":
		return model.Instance{}, errNotProvider
	}
	inst := model.Instance{Address: u.Address, Port: u.Port, Protocol: u.Protocol}
	for _, k := range labelParams {
		if v := u.Params[k]; v != "" {
			if inst.Labels == nil {
				inst.Labels = map[string]string{}
			}
			inst.Labels[k] = v
		}
	}
	inst.Labels, _ = model.FilterLabels(inst.Labels)
	if w, err := strconv.ParseUint(u.Params["weight"], 10, 32); err == nil {
		inst.Weight = uint32(w)
	}
	return inst, nil
}

// hostFor names a service after its interface: lower-cased, each character a DNS name cannot
// carry replaced by '-', then the suffix.
func hostFor(iface, suffix string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(iface) + suffix {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	labels := strings.Split(b.String(), ".")
	for i, l := range labels {
		if labels[i] = strings.Trim(l, "-"); len(labels[i]) > 63 {
			return "", fmt.Errorf("interface %q gives a DNS label longer than 63 characters", iface)
		}
	}
	host := strings.Join(labels, ".")
	if err := model.ValidateHost(host); err != nil {
		return "", fmt.Errorf("interface %q gives no valid host (%q): %v", iface, host, err)
	}
	return host, nil
}
