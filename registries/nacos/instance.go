package nacos

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"strings"
	"unicode/utf8"

	nacosmodel "github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// serviceID names one Nacos service.
type serviceID struct {
	namespace, group, name string
}

func (s serviceID) String() string { return s.namespace + "/" + s.group + "/" + s.name }

// Weight scaling: Nacos weights are decimals (default 1, at most 10000); mesh weights are
// integers. Scaling by 100 keeps two decimals and the relative order of weights that differ
// by at least 0.01.
const (
	weightScale = 100
	maxWeight   = 10000 * weightScale
)

// nacosDefaultCluster is the cluster of instances registered without one.
const nacosDefaultCluster = "DEFAULT"

// Metadata that never becomes a label, for every service: volatile values (they change on
// every restart, so endpoints would churn) and what duplicates an instance field.
var volatileMetadata = set("timestamp", "pid", "startTime", "startup.time", "protocol", "weight")

// dubboParams are Dubbo URL parameters dropped from provider labels, as in the ZooKeeper
// plugin: volatile, duplicated by the instance, a credential (token), or describing the
// registration rather than the endpoint.
var dubboParams = set("timestamp", "pid", "methods", "anyhost", "dynamic", "generic", "deprecated",
	"side", "release", "dubbo", "interface", "category", "weight", "token", "revision",
	"bind.ip", "bind.port", "path", "protocol")

// Prefixes of metadata keys servers and client libraries add for themselves: Nacos's Java
// client ("preserved.heart.beat.interval", …) and Nacos-protocol servers ("internal-…").
var internalPrefixes = []string{"internal-", "preserved."}

// credentialWords mark metadata keys that may carry credentials; they never become labels.
var credentialWords = []string{"password", "passwd", "secret", "token", "credential", "accesskey", "access-key", "access_key"}

func set(items ...string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[it] = true
	}
	return m
}

// rejection is a registry item that could not be used.
type rejection struct{ item, reason string }

// converter turns pushed instances into mesh instances. It is pure.
type converter struct {
	clusters        map[string]bool
	defaultProtocol string
}

// convert returns the usable instances of a service and the instances it rejects. Disabled,
// unhealthy, zero-weight and other clusters' instances are left out without a rejection:
// they are valid, just not to receive traffic (Nacos's own clients skip them too).
func (c converter) convert(id serviceID, dubbo *dubboName, hosts []nacosmodel.Instance) ([]catalog.Instance, []rejection) {
	out := make([]catalog.Instance, 0, len(hosts))
	var rejected []rejection
	for _, h := range hosts {
		if !c.wanted(h) {
			continue
		}
		inst, skip, err := c.instance(dubbo, h)
		switch {
		case err != nil:
			rejected = append(rejected, rejection{item: fmt.Sprintf("%s/%s:%d", id, clip(h.Ip, 64), h.Port), reason: err.Error()})
		case skip == "":
			out = append(out, inst)
		}
	}
	return out, rejected
}

func (c converter) wanted(h nacosmodel.Instance) bool {
	if !h.Enable || !h.Healthy || !(h.Weight > 0) {
		return false
	}
	if c.clusters == nil {
		return true
	}
	cluster := h.ClusterName
	if cluster == "" {
		cluster = nacosDefaultCluster
	}
	return c.clusters[cluster]
}

// instance converts one instance. skip is non-empty for an instance that is legitimately not
// an endpoint (a Dubbo consumer registered among providers).
func (c converter) instance(dubbo *dubboName, h nacosmodel.Instance) (inst catalog.Instance, skip string, err error) {
	ip, err := netip.ParseAddr(strings.Trim(h.Ip, "[]"))
	switch {
	case err != nil:
		return inst, "", fmt.Errorf("address %s is not an IP address", catalog.Quote(h.Ip, 64))
	case ip.Zone() != "":
		return inst, "", fmt.Errorf("address %s has an IPv6 zone", catalog.Quote(h.Ip, 64))
	case ip.Unmap().IsUnspecified() || ip.IsMulticast():
		return inst, "", fmt.Errorf("address %s cannot be an endpoint", ip)
	}
	if h.Port < 1 || h.Port > 65535 {
		return inst, "", fmt.Errorf("port %d is not from 1 to 65535", h.Port)
	}
	md := h.Metadata
	protocol := strings.ToLower(strings.TrimSpace(md["protocol"]))
	var labels map[string]string
	if dubbo != nil {
		switch {
		case md["side"] == "consumer":
			return inst, "consumer", nil
		case md["category"] != "" && md["category"] != "providers":
			return inst, "category " + md["category"], nil
		case md["interface"] != "" && md["interface"] != dubbo.iface:
			return inst, "", fmt.Errorf("metadata names interface %s, the service name %s", catalog.Quote(md["interface"], 128), catalog.Quote(dubbo.iface, 128))
		}
		if protocol == "" {
			protocol = "dubbo"
		}
		labels = dubboLabels(md, dubbo)
	} else {
		if protocol == "" {
			protocol = c.defaultProtocol
		}
		labels = metadataLabels(md, volatileMetadata)
	}
	if !catalog.IsProtocol(protocol) {
		return inst, "", fmt.Errorf("protocol %s is not a lower-case token of at most 32 characters", catalog.Quote(protocol, 32))
	}
	return catalog.Instance{
		Address:  ip.Unmap().String(),
		Port:     uint32(h.Port),
		Protocol: protocol,
		Labels:   labels,
		Weight:   scaleWeight(h.Weight),
		Locality: locality(md),
	}, "", nil
}

// scaleWeight maps a positive Nacos weight to a mesh weight of at least 1.
func scaleWeight(w float64) uint32 {
	scaled := math.Round(w * weightScale)
	return uint32(min(max(scaled, 1), maxWeight))
}

// locality reads Istio's region/zone/subzone from metadata, as far as it is given.
func locality(md map[string]string) string {
	var parts []string
	for _, k := range []string{"region", "zone", "subzone"} {
		v := strings.TrimSpace(md[k])
		if v == "" || strings.Contains(v, "/") || len(v) > 63 {
			break
		}
		parts = append(parts, v)
	}
	return strings.Join(parts, "/")
}

// metadataLabels keeps the metadata that makes valid, stable labels.
func metadataLabels(md map[string]string, drop map[string]bool) map[string]string {
	labels := make(map[string]string, len(md))
	for k, v := range md {
		if v == "" || drop[k] || internalKey(k) || credentialKey(k) {
			continue
		}
		labels[k] = v
	}
	kept, _ := catalog.FilterLabels(labels)
	return kept
}

// dubboLabels are a provider's labels as the ZooKeeper plugin makes them from the provider
// URL's parameters (Dubbo copies those into the instance metadata). version and group come
// from the service name when the metadata lacks them.
func dubboLabels(md map[string]string, d *dubboName) map[string]string {
	fromName := map[string]string{"version": d.version, "group": d.group}
	if md["version"] == "" || md["group"] == "" {
		withName := make(map[string]string, len(md)+2)
		maps.Copy(withName, md)
		md = withName
		for k, v := range fromName {
			if md[k] == "" {
				md[k] = v
			}
		}
	}
	return metadataLabels(md, dubboParams)
}

func internalKey(k string) bool {
	for _, p := range internalPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

func credentialKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range credentialWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// clip shortens s to at most n bytes on a rune boundary, marking a cut with "…", and makes
// it valid UTF-8: everything sent to the host must be.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
