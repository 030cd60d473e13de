// Package dubbo holds Dubbo's registry conventions that every registry plugin shares:
// provider URL parsing, which URL parameters become endpoint labels, and host names, so that
// one Dubbo service gets the same host and labels from ZooKeeper, Nacos and etcd.

package dubbo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
	"unique"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// MaxItemBytes bounds what is parsed from one registry item (a provider node name or an
// instance node's data). Dubbo writes a few hundred bytes; anything this large is garbage.
const MaxItemBytes = 64 << 10

// ProviderURL is a Dubbo provider URL as Dubbo 2.7 and 3.x register it under
// /<root>/<interface>/providers: protocol://ip:port/path?key=value&...
type ProviderURL struct {
	// Protocol is the lower-cased URL scheme: "dubbo", "tri", "rest", ...
	Protocol string
	// Address is the provider's IP address in canonical form (no brackets, IPv4 unmapped).
	Address string
	Port    uint32
	// Interface is the "interface" parameter, or the URL path when it is absent.
	Interface string
	// Params holds the query parameters verbatim; of repeated keys the last one wins, as in
	// Dubbo. Dubbo does not escape parameter values, so neither does the parser.
	Params map[string]string
}

// ParseProviderURL parses the name of a provider node: a URL-encoded Dubbo URL (Java's
// URLEncoder encoding, so '+' stands for a space). It never panics; every problem is an error
// that says what is wrong.
func ParseProviderURL(encoded string) (ProviderURL, error) {
	if len(encoded) > MaxItemBytes {
		return ProviderURL{}, fmt.Errorf("provider URL is %d bytes, more than %d", len(encoded), MaxItemBytes)
	}
	raw, err := url.QueryUnescape(encoded)
	if err != nil {
		return ProviderURL{}, fmt.Errorf("provider node name is not URL-encoded: %w", err)
	}
	return ParseDecodedURL(raw)
}

// ParseDecodedURL parses a provider URL that is already URL-decoded, as Nacos and other
// registries that keep URLs as values carry it.
func ParseDecodedURL(raw string) (ProviderURL, error) {
	var u ProviderURL
	if !utf8.ValidString(raw) {
		return u, errors.New("URL is not valid UTF-8")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return u, fmt.Errorf("not a URL: no \"://\" in %s", catalog.Quote(raw, 48))
	}
	scheme = strings.ToLower(scheme)
	if !catalog.IsProtocol(scheme) {
		return u, fmt.Errorf("protocol %s is not a lower-case token of at most 32 characters", catalog.Quote(scheme, 32))
	}
	u.Protocol = Intern(scheme)

	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:] // user:password@ never appears in provider URLs; ignore it
	}
	u.Params = parseQuery(query)
	addr, port, err := parseHostPort(authority)
	if err != nil {
		if _, skip := ProviderInstance(u); skip != "" {
			// A consumer or configuration URL needs no endpoint address (consumers register
			// without a port): it is skipped as not a provider, not rejected.
			return u, nil
		}
		return u, err
	}
	u.Address, u.Port = addr, port

	u.Interface = u.Params["interface"]
	if u.Interface == "" {
		// Dubbo's service interface defaults to the path; REST providers may put a context
		// path in front of it, which the interface parameter then disambiguates.
		u.Interface = strings.Trim(path, "/")
	}
	if u.Interface == "" {
		return u, errors.New("URL names no interface (no interface parameter and no path)")
	}
	return u, nil
}

// parseHostPort reads "ip:port" or "[ipv6]:port". Host names are refused: a mesh endpoint
// needs an address, and Dubbo registers IP addresses.
func parseHostPort(hostport string) (string, uint32, error) {
	if hostport == "" {
		return "", 0, errors.New("URL has no host")
	}
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("host and port %s: %v", catalog.Quote(hostport, 64), splitError(err))
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %s is not a number from 1 to 65535", catalog.Quote(portText, 16))
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", 0, fmt.Errorf("host %s is not an IP address", catalog.Quote(host, 64))
	}
	switch {
	case ip.Zone() != "":
		return "", 0, fmt.Errorf("address %s has an IPv6 zone", catalog.Quote(host, 64))
	case ip.Unmap().IsUnspecified():
		return "", 0, fmt.Errorf("address %s is unspecified", ip)
	case ip.IsMulticast():
		return "", 0, fmt.Errorf("address %s is multicast", ip)
	}
	return ip.Unmap().String(), uint32(port), nil
}

// splitError shortens net.SplitHostPort's messages, which repeat the input.
func splitError(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return "malformed"
}

// parseQuery splits a Dubbo query string the way Dubbo does: on '&', then on the first '='.
// Keys without a value get the empty value. Values are not unescaped.
func parseQuery(q string) map[string]string {
	params := make(map[string]string, strings.Count(q, "&")+1)
	for kv := range strings.SplitSeq(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k = strings.TrimSpace(k); k != "" {
			params[k] = strings.TrimSpace(v)
		}
	}
	return params
}

// droppedParams are provider URL parameters that never become endpoint labels: volatile ones
// (they change on every restart, so labels would churn), ones that duplicate what the
// instance already says, one that is a credential (token), and ones that describe the
// registration rather than the endpoint.
var droppedParams = map[string]bool{
	"timestamp": true, "pid": true, "methods": true, "anyhost": true, "dynamic": true,
	"generic": true, "deprecated": true, "side": true, "release": true, "dubbo": true,
	"interface": true, "category": true, "weight": true, "token": true, "revision": true,
	"bind.ip": true, "bind.port": true, "path": true,
}

// nonProviderProtocols are schemes Dubbo uses for configuration and subscriptions; they are
// not endpoints even when they show up among providers.
var nonProviderProtocols = map[string]bool{
	"empty": true, "override": true, "route": true, "consumer": true, "routers": true,
	"configurators": true, "providers": true,
}

// ProviderInstance turns a provider URL into an endpoint. skip is non-empty when the URL is
// legitimately not a provider (a consumer, another category): it is ignored, not rejected.
func ProviderInstance(u ProviderURL) (inst catalog.Instance, skip string) {
	switch {
	case u.Params["side"] == "consumer":
		return inst, "consumer URL"
	case u.Params["category"] != "" && u.Params["category"] != "providers":
		return inst, "category " + u.Params["category"]
	case nonProviderProtocols[u.Protocol]:
		return inst, u.Protocol + " URL"
	}
	inst = catalog.Instance{Address: u.Address, Port: u.Port, Protocol: u.Protocol, Labels: ProviderLabels(u.Params)}
	if w, err := strconv.ParseUint(u.Params["weight"], 10, 32); err == nil {
		inst.Weight = uint32(w)
	}
	return inst, ""
}

// ProviderLabels keeps the parameters that make valid, stable Kubernetes labels. version,
// group and application keep their plain names so that Istio subsets can select them.
func ProviderLabels(params map[string]string) map[string]string {
	var labels map[string]string
	for k, v := range params {
		if v == "" || droppedParams[k] || !catalog.IsLabelKey(k) || !catalog.IsLabelValue(v) {
			continue
		}
		if labels == nil {
			labels = make(map[string]string, 4)
		}
		labels[Intern(k)] = Intern(v)
	}
	if len(labels) > maxProviderLabels {
		labels, _ = catalog.FilterLabels(labels) // keeps a deterministic subset
	}
	return labels
}

// maxProviderLabels is catalog.FilterLabels' bound; past it, FilterLabels picks the subset.
const maxProviderLabels = 64

// Intern returns the canonical copy of a string that is kept for long: label keys and values
// repeat across thousands of providers, and as substrings of a provider URL they would keep
// the whole URL alive.
func Intern(s string) string { return unique.Make(s).Value() }
