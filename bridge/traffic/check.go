package traffic

import (
	"encoding/json"
	"errors"
	"fmt"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meltemi-mesh/meltemi/bridge/traffic/internal/mpproto"
)

// CheckEnvoyFilter decodes every patch value of an EnvoyFilter the way a proxy would and
// validates it: the listener filter and its typed config with go-control-plane's validation,
// and MetaProtocol configs (TypedStructs) against the MetaProtocol proxy's message, rejecting
// unknown fields. It is meant for tests, including on objects read back from the API server.
func CheckEnvoyFilter(u *unstructured.Unstructured) error {
	patches, _, err := unstructured.NestedSlice(u.Object, "spec", "configPatches")
	if err != nil {
		return fmt.Errorf("spec.configPatches: %w", err)
	}
	if len(patches) == 0 {
		return errors.New("no configPatches")
	}
	for i, p := range patches {
		m, _ := p.(map[string]any)
		value, ok, _ := unstructured.NestedMap(m, "patch", "value")
		if !ok {
			return fmt.Errorf("configPatches[%d]: no patch.value", i)
		}
		raw, err := json.Marshal(value)
		if err != nil {
			return fmt.Errorf("configPatches[%d]: %w", i, err)
		}
		if err := checkFilter(raw); err != nil {
			return fmt.Errorf("configPatches[%d]: %w", i, err)
		}
	}
	return nil
}

func checkFilter(raw []byte) error {
	f := &listenerv3.Filter{}
	if err := protojson.Unmarshal(raw, f); err != nil {
		return fmt.Errorf("decoding listener filter: %w", err)
	}
	if err := f.ValidateAll(); err != nil {
		return fmt.Errorf("listener filter %s: %w", f.GetName(), err)
	}
	cfg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("filter %s: typed config: %w", f.GetName(), err)
	}
	if v, ok := cfg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("filter %s: %w", f.GetName(), err)
		}
	}
	ts, ok := cfg.(*udpatypev1.TypedStruct)
	if !ok {
		return nil
	}
	if ts.GetTypeUrl() != MetaProtocolTypeURL {
		return fmt.Errorf("filter %s: TypedStruct of unexpected type %s", f.GetName(), ts.GetTypeUrl())
	}
	js, err := protojson.Marshal(ts.GetValue())
	if err != nil {
		return err
	}
	mp := &mpproto.MetaProtocolProxy{}
	if err := protojson.Unmarshal(js, mp); err != nil {
		return fmt.Errorf("filter %s: decoding MetaProtocolProxy: %w", f.GetName(), err)
	}
	return checkMetaProtocol(mp)
}

// checkMetaProtocol applies the MetaProtocol proxy's own validation rules, which the local
// proto does not generate code for.
func checkMetaProtocol(mp *mpproto.MetaProtocolProxy) error {
	if mp.GetStatPrefix() == "" {
		return errors.New("MetaProtocolProxy: empty stat_prefix")
	}
	if mp.GetProtocol().GetName() == "" || mp.GetProtocol().GetCodec().GetName() == "" {
		return errors.New("MetaProtocolProxy: protocol name and codec name are required")
	}
	switch rs := mp.GetRouteSpecifier().(type) {
	case *mpproto.MetaProtocolProxy_Rds:
		if rs.Rds.GetRouteConfigName() == "" || rs.Rds.GetConfigSource() == nil {
			return errors.New("MetaProtocolProxy: rds needs route_config_name and config_source")
		}
		if err := rs.Rds.GetConfigSource().ValidateAll(); err != nil {
			return fmt.Errorf("MetaProtocolProxy rds: %w", err)
		}
	case *mpproto.MetaProtocolProxy_RouteConfig:
		if err := CheckRouteConfig(rs.RouteConfig); err != nil {
			return fmt.Errorf("MetaProtocolProxy route_config: %w", err)
		}
	default:
		return errors.New("MetaProtocolProxy: neither rds nor route_config")
	}
	filters := mp.GetMetaProtocolFilters()
	if len(filters) == 0 || filters[len(filters)-1].GetName() != routerFilter {
		return errors.New("MetaProtocolProxy: the filter chain must end with the router")
	}
	for _, f := range filters {
		if f.GetConfig() == nil {
			continue
		}
		cfg, err := f.GetConfig().UnmarshalNew()
		if err != nil {
			return fmt.Errorf("MetaProtocol filter %s: %w", f.GetName(), err)
		}
		if err := checkFilterConfig(cfg); err != nil {
			return fmt.Errorf("MetaProtocol filter %s: %w", f.GetName(), err)
		}
	}
	return nil
}

func checkFilterConfig(cfg proto.Message) error {
	var matches []*mpproto.RouteMatch
	switch c := cfg.(type) {
	case *mpproto.LocalRateLimit:
		if c.GetStatPrefix() == "" || (c.GetTokenBucket() == nil && len(c.GetConditions()) == 0) {
			return errors.New("local rate limit needs stat_prefix and a token bucket or conditions")
		}
		if c.GetTokenBucket() != nil {
			if err := c.GetTokenBucket().ValidateAll(); err != nil {
				return err
			}
		}
		for _, cond := range c.GetConditions() {
			if cond.GetTokenBucket() == nil {
				return errors.New("condition without token bucket")
			}
			if err := cond.GetTokenBucket().ValidateAll(); err != nil {
				return err
			}
			matches = append(matches, cond.GetMatch())
		}
	case *mpproto.RateLimit:
		if c.GetDomain() == "" || len(c.GetDescriptors()) == 0 || c.GetRateLimitService() == nil {
			return errors.New("rate limit needs domain, rate_limit_service and descriptors")
		}
		if err := c.GetRateLimitService().ValidateAll(); err != nil {
			return err
		}
		matches = append(matches, c.GetMatch())
	default:
		return fmt.Errorf("unexpected config %T", cfg)
	}
	for _, m := range matches {
		for _, hm := range m.GetMetadata() {
			if err := hm.ValidateAll(); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckRouteConfig validates a route configuration and the shape the MetaProtocol proxy needs:
// exactly one virtual host and a non-empty route list.
func CheckRouteConfig(rc *routev3.RouteConfiguration) error {
	if err := rc.ValidateAll(); err != nil {
		return err
	}
	if len(rc.GetVirtualHosts()) != 1 || len(rc.GetVirtualHosts()[0].GetRoutes()) == 0 {
		return fmt.Errorf("route configuration %s needs exactly one virtual host with routes", rc.GetName())
	}
	return nil
}
