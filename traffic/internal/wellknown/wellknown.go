// Package wellknown holds the names the proxies know their filters, clusters and messages by,
// and the proxy rules that their message definitions do not state. The translator writes them;
// the checks in traffictest read them back.
package wellknown

import "time"

// Network filters and type URLs.
const (
	MetaProtocolFilter  = "envoy.filters.network.meta_protocol_proxy"
	MetaProtocolTypeURL = "type.googleapis.com/aeraki.meta_protocol_proxy.v1alpha.MetaProtocolProxy"
	DubboProxyFilter    = "envoy.filters.network.dubbo_proxy"
	ThriftProxyFilter   = "envoy.filters.network.thrift_proxy"
	RedisProxyFilter    = "envoy.filters.network.redis_proxy"
	TCPProxyFilter      = "envoy.filters.network.tcp_proxy"
	TypedStructTypeURL  = "type.googleapis.com/udpa.type.v1.TypedStruct"
)

// Filters inside the MetaProtocol proxy.
const (
	MetaRouterFilter           = "aeraki.meta_protocol.filters.router"
	MetaLocalRateLimitFilter   = "aeraki.meta_protocol.filters.local_ratelimit"
	MetaGlobalRateLimitFilter  = "aeraki.meta_protocol.filters.ratelimit"
	MetaMetadataExchangeFilter = "aeraki.meta_protocol.filters.metadata_exchange"
	MetaIstioStatsFilter       = "aeraki.meta_protocol.filters.istio_stats"
)

// Filters inside Envoy's native Dubbo and Thrift proxies. The Dubbo RBAC filter exists in
// Aeraki's proxy builds, not in upstream Envoy.
const (
	DubboRouterFilter  = "envoy.filters.dubbo.router"
	DubboRBACFilter    = "envoy.filters.dubbo.rbac"
	ThriftRouterFilter = "envoy.filters.thrift.router"
)

// RedisClusterType is the custom cluster type of Envoy's Redis Cluster support.
const RedisClusterType = "envoy.clusters.redis"

// MinFillInterval is the shortest token bucket fill interval the MetaProtocol local rate limit
// takes; a shorter one makes the proxy reject the listener.
const MinFillInterval = 50 * time.Millisecond
