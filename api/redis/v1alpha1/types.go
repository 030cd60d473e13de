// Package v1alpha1 is the redis.aeraki.io/v1alpha1 API: routing, mirroring, faults and
// authentication for Redis traffic (RedisService) and the connection to Redis servers
// (RedisDestination). Group, kinds and JSON field names are Aeraki's, so YAML written for
// Aeraki keeps working.
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and version of the API.
const (
	Group   = "redis.aeraki.io"
	Version = "v1alpha1"
)

// Kinds and resources served.
var (
	RedisServiceKind         = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "RedisService"}
	RedisServiceResource     = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "redisservices"}
	RedisDestinationKind     = schema.GroupVersionKind{Group: Group, Version: Version, Kind: "RedisDestination"}
	RedisDestinationResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "redisdestinations"}
)

// RedisService routes the Redis traffic clients send to its hosts: by key prefix to other
// Redis services, mirrored, with faults injected, and with the password clients must give.
type RedisService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RedisServiceSpec `json:"spec"`
	Status            *Status          `json:"status,omitempty"`
}

// RedisServiceSpec is a RedisService's spec.
type RedisServiceSpec struct {
	// Host are the hosts (ServiceEntry hosts or Service names) whose clients' traffic it routes.
	Host     []string  `json:"host,omitempty"`
	Settings *Settings `json:"settings,omitempty"`
	// Redis are the routes: by key prefix, and one without a match (the catch-all).
	Redis  []Route `json:"redis,omitempty"`
	Faults []Fault `json:"faults,omitempty"`
}

// Read policies: which servers of a Redis cluster serve reads.
const (
	ReadPolicyMaster        = "MASTER"
	ReadPolicyPreferMaster  = "PREFER_MASTER"
	ReadPolicyReplica       = "REPLICA"
	ReadPolicyPreferReplica = "PREFER_REPLICA"
	ReadPolicyAny           = "ANY"
)

// Settings of the client-side Redis proxy.
type Settings struct {
	CaseInsensitive               bool             `json:"caseInsensitive,omitempty"`
	OpTimeout                     *metav1.Duration `json:"opTimeout,omitempty"`
	EnableCommandStats            bool             `json:"enableCommandStats,omitempty"`
	MaxBufferSizeBeforeFlush      uint32           `json:"maxBufferSizeBeforeFlush,omitempty"`
	BufferFlushTimeout            *metav1.Duration `json:"bufferFlushTimeout,omitempty"`
	MaxUpstreamUnknownConnections *uint32          `json:"maxUpstreamUnknownConnections,omitempty"`
	EnableHashtagging             bool             `json:"enableHashtagging,omitempty"`
	EnableRedirection             bool             `json:"enableRedirection,omitempty"`
	ReadPolicy                    string           `json:"readPolicy,omitempty"`
	// Auth is the password (and user) clients must give: downstream authentication.
	Auth *Auth `json:"auth,omitempty"`
}

// Route sends the commands whose key matches to a destination, and mirrors them.
type Route struct {
	// Match is the key condition; without one the route is the catch-all.
	Match  *RouteMatch `json:"match,omitempty"`
	Route  Destination `json:"route"`
	Mirror []Mirror    `json:"mirror,omitempty"`
}

// RouteMatch holds a route's condition.
type RouteMatch struct {
	Key *KeyMatch `json:"key,omitempty"`
}

// KeyMatch matches keys by prefix, optionally removed before the command is sent on.
type KeyMatch struct {
	Prefix       string `json:"prefix,omitempty"`
	RemovePrefix bool   `json:"removePrefix,omitempty"`
}

// Destination is a Redis service; Port 0 means the port of the host's tcp-redis port.
type Destination struct {
	Host string `json:"host"`
	Port uint32 `json:"port,omitempty"`
}

// Mirror sends a share of a route's commands to another destination as well.
type Mirror struct {
	Route               Destination `json:"route"`
	Percentage          *Percent    `json:"percentage,omitempty"`
	ExcludeReadCommands bool        `json:"excludeReadCommands,omitempty"`
}

// Percent is a percentage, 0 to 100.
type Percent struct {
	Value float64 `json:"value,omitempty"`
}

// Fault types.
const (
	FaultDelay = "DELAY"
	FaultError = "ERROR"
)

// Fault delays or fails a share of commands (all, or those named).
type Fault struct {
	Type       string           `json:"type,omitempty"`
	Percentage *Percent         `json:"percentage,omitempty"`
	Delay      *metav1.Duration `json:"delay,omitempty"`
	Commands   []string         `json:"commands,omitempty"`
}

// RedisDestination says how proxies connect to a Redis service: as one server or as a Redis
// cluster, with which password, over which TCP settings.
type RedisDestination struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              RedisDestinationSpec `json:"spec"`
	Status            *Status              `json:"status,omitempty"`
}

// RedisDestinationSpec is a RedisDestination's spec.
type RedisDestinationSpec struct {
	Host          string         `json:"host"`
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty"`
}

// TrafficPolicy holds the connection pool settings.
type TrafficPolicy struct {
	ConnectionPool *ConnectionPoolSettings `json:"connectionPool,omitempty"`
}

// ConnectionPoolSettings are Istio's TCP settings and the Redis ones.
type ConnectionPoolSettings struct {
	TCP   *TCPSettings   `json:"tcp,omitempty"`
	Redis *RedisSettings `json:"redis,omitempty"`
}

// TCPSettings is the part of Istio's ConnectionPoolSettings.TCPSettings Aeraki applies.
type TCPSettings struct {
	MaxConnections int32            `json:"maxConnections,omitempty"`
	ConnectTimeout *metav1.Duration `json:"connectTimeout,omitempty"`
	TCPKeepalive   *TCPKeepalive    `json:"tcpKeepalive,omitempty"`
}

// TCPKeepalive is Istio's TcpKeepalive.
type TCPKeepalive struct {
	Probes   uint32           `json:"probes,omitempty"`
	Time     *metav1.Duration `json:"time,omitempty"`
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// Modes of a Redis destination.
const (
	ModeProxy   = "PROXY"
	ModeCluster = "CLUSTER"
)

// RedisSettings say whether the destination is one server (PROXY) or a Redis cluster whose
// topology the proxy discovers (CLUSTER), and the password proxies give it.
type RedisSettings struct {
	Mode string `json:"mode,omitempty"`
	Auth *Auth  `json:"auth,omitempty"`
	// DiscoveryEndpoints are the host:port addresses a CLUSTER is discovered from; default the
	// host and its port.
	DiscoveryEndpoints []string `json:"discoveryEndpoints,omitempty"`
}

// Auth is a password (and user name) from a Secret of the object's namespace, or written inline.
type Auth struct {
	Secret *SecretReference `json:"secret,omitempty"`
	Plain  *PlainAuth       `json:"plain,omitempty"`
}

// SecretReference names a Secret and its keys; PasswordField defaults to "password" (else
// "token"), UsernameField to "username".
type SecretReference struct {
	Name          string `json:"name"`
	PasswordField string `json:"passwordField,omitempty"`
	UsernameField string `json:"usernameField,omitempty"`
}

// PlainAuth is a password written in the object itself.
type PlainAuth struct {
	Password string `json:"password"`
	Username string `json:"username,omitempty"`
}

// Status is what Meltemi reports about an object.
type Status struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
