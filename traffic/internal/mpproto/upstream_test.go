package mpproto

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// upstream lists the fields of the MetaProtocol proxy's messages as the proxy declares them
// (aeraki-mesh/meta-protocol-proxy, api/meta_protocol_proxy/**.proto, at commit 19c1288b of
// 2025-03-29): "[repeated ]<type> <name> = <number>", type names fully qualified, oneof members
// marked "oneof <name>:". A proxy decodes our TypedStructs with its own messages, so ours must
// be these exactly; a difference here is a config the proxy would read differently.
var upstream = map[string][]string{
	"aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy": {
		"string stat_prefix = 1",
		"string application_protocol = 2",
		"oneof route_specifier: aeraki.meta_protocol_proxy.v1alpha.Rds rds = 3",
		"oneof route_specifier: aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration route_config = 4",
		"aeraki.meta_protocol_proxy.v1alpha.Codec codec = 5",
		"repeated aeraki.meta_protocol_proxy.v1alpha.MetaProtocolFilter meta_protocol_filters = 6",
		"aeraki.meta_protocol_proxy.v1alpha.Tracing tracing = 7",
		"repeated envoy.config.accesslog.v3.AccessLog access_log = 8",
		"google.protobuf.Duration idle_timeout = 11",
		"aeraki.meta_protocol_proxy.v1alpha.ApplicationProtocol protocol = 12",
	},
	"aeraki.meta_protocol_proxy.v1alpha.Rds": {
		"envoy.config.core.v3.ConfigSource config_source = 1",
		"string route_config_name = 2",
	},
	"aeraki.meta_protocol_proxy.v1alpha.MetaProtocolFilter": {
		"string name = 1",
		"google.protobuf.Any config = 2",
	},
	"aeraki.meta_protocol_proxy.v1alpha.Codec": {
		"string name = 1",
		"google.protobuf.Any config = 2",
	},
	"aeraki.meta_protocol_proxy.v1alpha.Tracing": {
		"envoy.type.v3.Percent client_sampling = 3",
		"envoy.type.v3.Percent random_sampling = 4",
		"envoy.type.v3.Percent overall_sampling = 5",
		"bool verbose = 6",
		"google.protobuf.UInt32Value max_tag_length = 7",
		"envoy.config.trace.v3.Tracing.Http provider = 9",
	},
	"aeraki.meta_protocol_proxy.v1alpha.ApplicationProtocol": {
		"string name = 1",
		"aeraki.meta_protocol_proxy.v1alpha.Codec codec = 2",
		"bool multiplexing = 3",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteConfiguration": {
		"string name = 1",
		"repeated aeraki.meta_protocol_proxy.config.route.v1alpha.Route routes = 2",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.Route": {
		"string name = 1",
		"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteMatch match = 2",
		"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteAction route = 3",
		"repeated aeraki.meta_protocol_proxy.config.route.v1alpha.KeyValue request_mutation = 19",
		"repeated aeraki.meta_protocol_proxy.config.route.v1alpha.KeyValue response_mutation = 20",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteMatch": {
		"repeated envoy.config.route.v3.HeaderMatcher metadata = 1",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteAction": {
		"oneof cluster_specifier: string cluster = 1",
		"oneof cluster_specifier: envoy.config.route.v3.WeightedCluster weighted_clusters = 2",
		"repeated string hash_policy = 10",
		"repeated aeraki.meta_protocol_proxy.config.route.v1alpha.RouteAction.RequestMirrorPolicy request_mirror_policies = 11",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteAction.RequestMirrorPolicy": {
		"string cluster = 1",
		"envoy.config.core.v3.RuntimeFractionalPercent runtime_fraction = 2",
	},
	"aeraki.meta_protocol_proxy.config.route.v1alpha.KeyValue": {
		"string key = 1",
		"string value = 2",
	},
	"aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.RateLimit": {
		"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteMatch match = 1",
		"string domain = 2",
		"google.protobuf.Duration timeout = 3",
		"bool failure_mode_deny = 4",
		"envoy.config.ratelimit.v3.RateLimitServiceConfig rate_limit_service = 5",
		"repeated aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.Descriptor descriptors = 6",
	},
	"aeraki.meta_protocol_proxy.filters.ratelimit.v1alpha.Descriptor": {
		"string property = 1",
		"string descriptor_key = 2",
	},
	"aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimit": {
		"string stat_prefix = 1",
		"envoy.type.v3.TokenBucket token_bucket = 2",
		"repeated aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimitCondition conditions = 3",
	},
	"aeraki.meta_protocol_proxy.filters.local_ratelimit.v1alpha.LocalRateLimitCondition": {
		"aeraki.meta_protocol_proxy.config.route.v1alpha.RouteMatch match = 1",
		"envoy.type.v3.TokenBucket token_bucket = 2",
	},
	"aeraki.meta_protocol_proxy.filters.istio_stats.v1alpha.IstioStats": {
		"string destination_service = 1",
	},
	"aeraki.meta_protocol_proxy.filters.metadata_exchange.v1alpha.MetadataExchange": {},
	"aeraki.meta_protocol_proxy.filters.router.v1alpha.Router":                      {},
}

func TestMessagesMatchUpstream(t *testing.T) {
	for name, want := range upstream {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			t.Errorf("%s: not declared: %v", name, err)
			continue
		}
		md := d.(protoreflect.MessageDescriptor)
		var got []string
		for i := range md.Fields().Len() {
			got = append(got, describeField(md.Fields().Get(i)))
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s differs from upstream (-upstream +local):\n%s", name, diff)
		}
	}
	// Every message declared here is one of upstream's: nothing invented.
	for _, fd := range []protoreflect.FileDescriptor{
		File_mpproto_meta_protocol_proxy_proto, File_mpproto_route_proto, File_mpproto_ratelimit_proto,
		File_mpproto_local_ratelimit_proto, File_mpproto_istio_stats_proto, File_mpproto_metadata_exchange_proto,
		File_mpproto_router_proto,
	} {
		var walk func(protoreflect.MessageDescriptors)
		walk = func(ms protoreflect.MessageDescriptors) {
			for i := range ms.Len() {
				if _, ok := upstream[string(ms.Get(i).FullName())]; !ok {
					t.Errorf("%s is declared locally but not listed as upstream's", ms.Get(i).FullName())
				}
				walk(ms.Get(i).Messages())
			}
		}
		walk(fd.Messages())
	}
}

func describeField(f protoreflect.FieldDescriptor) string {
	typ := f.Kind().String()
	switch f.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		typ = string(f.Message().FullName())
	case protoreflect.EnumKind:
		typ = string(f.Enum().FullName())
	}
	s := fmt.Sprintf("%s %s = %d", typ, f.Name(), f.Number())
	if f.IsList() {
		s = "repeated " + s
	}
	if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
		s = fmt.Sprintf("oneof %s: %s", o.Name(), s)
	}
	return s
}
