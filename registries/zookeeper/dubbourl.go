package zookeeper

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

	"github.com/meltemi-mesh/meltemi/bridge/model"
)

// maxItemBytes bounds what is parsed from one registry item (a provider node name or an
// instance node's data). Dubbo writes a few hundred bytes; anything this large is garbage.
const maxItemBytes = 64 << 10

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
	if len(encoded) > maxItemBytes {
		return ProviderURL{}, fmt.Errorf("provider URL is %d bytes, more than %d", len(encoded), maxItemBytes)
	}
	raw, err := url.QueryUnescape(encoded)
	if err != nil {
		return ProviderURL{}, fmt.Errorf("provider node name is not URL-encoded: %w", err)
	}
	return parseDecodedURL(raw)
}

func parseDecodedURL(raw string) (ProviderURL, error) {
	var u ProviderURL
	if !utf8.ValidString(raw) {
		return u, errors.New("URL is not valid UTF-8")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return u, fmt.Errorf("not a URL: no \"://\" in %s", quote(raw, 48))
	}
	scheme = strings.ToLower(scheme)
	if !isProtocol(scheme) {
		return u, fmt.Errorf("protocol %s is not a lower-case token of at most 32 characters", quote(scheme, 32))
	}
	u.Protocol = intern(scheme)

	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:] // user:password@ never appears in provider URLs; ignore it
	}
	addr, port, err := parseHostPort(authority)
	if err != nil {
		return u, err
	}
	u.Address, u.Port = addr, port

	u.Params = parseQuery(query)
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
		return "", 0, fmt.Errorf("host and port %s: %v", quote(hostport, 64), splitError(err))
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("port %s is not a number from 1 to 65535", quote(portText, 16))
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", 0, fmt.Errorf("host %s is not an IP address", quote(host, 64))
	}
	switch {
	case ip.Zone() != "":
		return "", 0, fmt.Errorf("address %s has an IPv6 zone", quote(host, 64))
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

func isProtocol(p string) bool {
	if p == "" || len(p) > 32 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
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

// providerInstance turns a provider URL into an endpoint. skip is non-empty when the URL is
// legitimately not a provider (a consumer, another category): it is ignored, not rejected.
func providerInstance(u ProviderURL) (inst model.Instance, skip string) {
	switch {
	case u.Params["side"] == "consumer":
		return inst, "consumer URL"
	case u.Params["category"] != "" && u.Params["category"] != "providers":
		return inst, "category " + u.Params["category"]
	case nonProviderProtocols[u.Protocol]:
		return inst, u.Protocol + " URL"
	}
	inst = model.Instance{Address: u.Address, Port: u.Port, Protocol: u.Protocol, Labels: providerLabels(u.Params)}
	if w, err := strconv.ParseUint(u.Params["weight"], 10, 32); err == nil {
		inst.Weight = uint32(w)
	}
	return inst, ""
}

// providerLabels keeps the parameters that make valid, stable Kubernetes labels. version,
// group and application keep their plain names so that Istio subsets can select them.
func providerLabels(params map[string]string) map[string]string {
	var labels map[string]string
	for k, v := range params {
		if v == "" || droppedParams[k] || !model.IsLabelKey(k) || !model.IsLabelValue(v) {
			continue
		}
		if labels == nil {
			labels = make(map[string]string, 4)
		}
		labels[intern(k)] = intern(v)
	}
	if len(labels) > maxProviderLabels {
		labels, _ = model.FilterLabels(labels) // keeps a deterministic subset
	}
	return labels
}

// maxProviderLabels is model.FilterLabels' bound; past it, FilterLabels picks the subset.
const maxProviderLabels = 64

// intern returns the canonical copy of a string that is kept for long: label keys and values
// repeat across thousands of providers, and as substrings of a provider URL they would keep
// the whole URL alive.
func intern(s string) string { return unique.Make(s).Value() }

// quote renders untrusted text for an error message: quoted, at most n bytes, valid UTF-8.
func quote(s string, n int) string {
	return strconv.Quote(model.Clip(s, n))
}
