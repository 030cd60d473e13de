package harness

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A resource a real proxy would reject is refused by the sidecar's decoder: unknown fields,
// and what fails Envoy's validation rules, also inside a listener filter's typed config.
func TestDecodeResourceIsStrict(t *testing.T) {
	good := &clusterv3.Cluster{Name: "outbound|80||a.example", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	if _, name, err := decodeResource(ClusterType, mustAny(t, good)); err != nil || name != good.Name {
		t.Fatalf("valid cluster: name %q, err %v", name, err)
	}

	unknown := mustAny(t, good)
	unknown.Value = protowire.AppendTag(unknown.Value, 9999, protowire.VarintType)
	unknown.Value = protowire.AppendVarint(unknown.Value, 1)
	if _, _, err := decodeResource(ClusterType, unknown); err == nil || !strings.Contains(err.Error(), "unknown fields") {
		t.Fatalf("a cluster with an unknown field: err %v, want unknown fields", err)
	}

	if _, _, err := decodeResource(ClusterType, mustAny(t, &clusterv3.Cluster{})); err == nil {
		t.Fatal("a cluster without a name was accepted")
	}

	tcp := func(cfg *tcpproxyv3.TcpProxy) *listenerv3.Listener {
		return &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, cfg)},
		}}}}}
	}
	if _, _, err := decodeResource(ListenerType, mustAny(t, tcp(&tcpproxyv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}}))); err != nil {
		t.Fatalf("valid listener: %v", err)
	}
	// tcp_proxy requires a stat prefix: Envoy rejects the listener.
	_, _, err := decodeResource(ListenerType, mustAny(t, tcp(&tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})))
	if err == nil || !strings.Contains(err.Error(), "envoy.filters.network.tcp_proxy") {
		t.Fatalf("listener with an invalid filter config: err %v", err)
	}
	if _, _, err := decodeResource(ListenerType, mustAny(t, good)); err == nil {
		t.Fatal("a cluster in a listener response was accepted")
	}
}

func TestUnknownFieldsFindsNestedOnes(t *testing.T) {
	inner := &tcpproxyv3.TcpProxy{StatPrefix: "s"}
	inner.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 500, protowire.VarintType), 7))
	l := &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{Name: "fc", Filters: []*listenerv3.Filter{{Name: "f"}}}}}
	l.FilterChains[0].Filters[0].ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 77, protowire.VarintType), 1))
	got := UnknownFields(l)
	if len(got) != 1 || !strings.Contains(got[0], "filter_chains[0].filters[0]") {
		t.Fatalf("unknown fields %v, want the filter's", got)
	}
	if got := UnknownFields(inner); len(got) != 1 {
		t.Fatalf("unknown fields %v, want one", got)
	}
}

func TestEDSAndRDSSubscriptions(t *testing.T) {
	cs := map[string]*clusterv3.Cluster{
		"outbound|80||b": {Name: "outbound|80||b", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}},
		"outbound|80||a": {Name: "outbound|80||a", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "outbound|80||a"}},
		"PassthroughCluster": {Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}},
	}
	if got := edsClusters(cs); strings.Join(got, ",") != "outbound|80||a,outbound|80||b" {
		t.Fatalf("EDS subscriptions %v", got)
	}
}
