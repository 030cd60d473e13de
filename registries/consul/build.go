package consul

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Keys of service meta (and tags key=value) that Meltemi reads instead of copying to labels.
const (
	metaProtocol = "protocol"
	metaZone     = "zone"
)

// maxInstanceLabels bounds the labels one endpoint gets from tags and meta.
const maxInstanceLabels = 32

// rejection is a registration that could not be used, and why.
type rejection struct{ item, reason string }

// serviceInput is one health query result and what is needed to turn it into a service.
type serviceInput struct {
	Key        string
	Name       string
	Datacenter string
	Entries    []*api.ServiceEntry
}

// buildService turns a health query result into the service Meltemi reports. ok is false when
// no instance is usable (the service then has no endpoints) or the host is invalid. It is pure:
// the same input gives the same output whatever order Consul listed instances in.
func buildService(cfg *config, in serviceInput) (svc catalog.Service, rejected []rejection, ok bool) {
	host, err := cfg.host.render(HostVars{Service: in.Name, Datacenter: in.Datacenter})
	if err != nil {
		return catalog.Service{}, []rejection{{in.Key, err.Error()}}, false
	}
	svc = catalog.Service{Key: in.Key, Host: host}
	for _, e := range in.Entries {
		inst, use, err := buildInstance(cfg, in, e)
		if err != nil {
			rejected = append(rejected, rejection{itemName(in.Key, e), err.Error()})
			continue
		}
		if !use {
			continue
		}
		svc.Instances = append(svc.Instances, inst)
	}
	svc.Normalize()
	return svc, rejected, len(svc.Instances) > 0
}

// itemName identifies one registration in rejections: key, node and service ID.
func itemName(key string, e *api.ServiceEntry) string {
	node, id := "?", "?"
	if e != nil && e.Node != nil {
		node = e.Node.Node
	}
	if e != nil && e.Service != nil {
		id = e.Service.ID
	}
	return catalog.Clip(key+"/"+node+"/"+id, 256)
}

// buildInstance maps one registration. use is false for registrations that are not
// endpoints (unhealthy ones, Connect proxies and gateways); err says why one is malformed.
func buildInstance(cfg *config, in serviceInput, e *api.ServiceEntry) (inst catalog.Instance, use bool, err error) {
	if e == nil || e.Service == nil || e.Node == nil {
		return inst, false, fmt.Errorf("registration without service or node")
	}
	s := e.Service
	if s.Kind != api.ServiceKindTypical {
		return inst, false, nil
	}
	switch e.Checks.AggregatedStatus() {
	case api.HealthPassing:
		inst.Weight = uint32(max(s.Weights.Passing, 0))
	case api.HealthWarning:
		if !cfg.includeWarning || s.Weights.Warning <= 0 {
			return inst, false, nil
		}
		inst.Weight = uint32(s.Weights.Warning)
	default:
		return inst, false, nil
	}
	// Consul's weights are relative to 1, its default for a registration that set none; the
	// mesh's are relative to DefaultWeight.
	inst.Weight = max(inst.Weight, 1) * catalog.DefaultWeight

	address := s.Address
	if address == "" {
		address = e.Node.Address
	}
	ip, perr := netip.ParseAddr(address)
	switch {
	case perr != nil:
		return inst, false, fmt.Errorf("address %q is not an IP address (endpoints of a STATIC ServiceEntry must be)", catalog.Clip(address, 64))
	case ip.Zone() != "":
		return inst, false, fmt.Errorf("address %s has an IPv6 zone", ip)
	case ip.Unmap().IsUnspecified() || ip.IsMulticast():
		return inst, false, fmt.Errorf("address %s cannot be an endpoint", ip)
	}
	inst.Address = ip.Unmap().String()
	if s.Port <= 0 || s.Port > 65535 {
		return inst, false, fmt.Errorf("port %d is not from 1 to 65535", s.Port)
	}
	inst.Port = uint32(s.Port)

	tags := tagPairs(s.Tags)
	if inst.Protocol, err = protocolOf(cfg, in.Name, s.Meta, tags); err != nil {
		return inst, false, err
	}
	inst.Locality = locality(in.Datacenter, s, e.Node)
	inst.Labels = labels(cfg, tags, s.Meta)
	return inst, true, nil
}

// tagPairs reads key=value tags; other tags are not labels. A later duplicate key wins.
func tagPairs(tags []string) map[string]string {
	out := map[string]string{}
	for _, t := range tags {
		if k, v, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) != "" {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// protocolOf picks an instance's protocol: service meta, then a protocol=… tag, then the
// service's configured default, then the registry's, then tcp.
func protocolOf(cfg *config, name string, meta, tags map[string]string) (string, error) {
	for _, src := range []struct{ what, value string }{
		{"service meta " + metaProtocol, meta[metaProtocol]},
		{"tag " + metaProtocol + "=", tags[metaProtocol]},
	} {
		if v := strings.ToLower(strings.TrimSpace(src.value)); v != "" {
			if !catalog.IsProtocol(v) {
				return "", fmt.Errorf("%s %q is not a protocol name (lower-case letters, digits, '-' and '_', at most 32)", src.what, catalog.Clip(src.value, 40))
			}
			return v, nil
		}
	}
	if p, ok := cfg.serviceProtos[name]; ok {
		return p, nil
	}
	if cfg.defaultProtocol != "" {
		return cfg.defaultProtocol, nil
	}
	return "tcp", nil
}

// locality is Istio's region/zone: the datacenter, and the zone from service meta, Consul's
// own service locality or node meta, in that order. A zone that cannot be a locality segment
// is left out rather than failing the endpoint.
func locality(dc string, s *api.AgentService, n *api.Node) string {
	zone := s.Meta[metaZone]
	if zone == "" && s.Locality != nil {
		zone = s.Locality.Zone
	}
	if zone == "" {
		zone = n.Meta[metaZone]
	}
	zone = strings.TrimSpace(zone)
	if zone == "" || strings.Contains(zone, "/") || len(zone) > 63 {
		return dc
	}
	return dc + "/" + zone
}

// labels merges key=value tags and service meta (meta wins) into valid endpoint labels,
// leaving out the keys Meltemi consumes and the configured volatile ones.
func labels(cfg *config, tags, meta map[string]string) map[string]string {
	merged := make(map[string]string, len(tags)+len(meta))
	maps.Copy(merged, tags)
	maps.Copy(merged, meta)
	for k := range merged {
		if k == metaProtocol || k == metaZone || cfg.excludeLabels[k] || strings.HasPrefix(k, "meltemi.io/") {
			delete(merged, k)
		}
	}
	kept, _ := catalog.FilterLabels(merged)
	if len(kept) > maxInstanceLabels {
		// A deterministic subset, so output does not flap.
		for _, k := range slices.Sorted(maps.Keys(kept))[maxInstanceLabels:] {
			delete(kept, k)
		}
	}
	return kept
}
