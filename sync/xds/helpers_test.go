package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// recvTimeout bounds every wait for a response that must come.
const recvTimeout = 5 * time.Second

// testServer is a Server serving on a real TCP listener on 127.0.0.1.
type testServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
}

func startServer(t testing.TB, tc *tls.Config) *testServer {
	t.Helper()
	return startServerOn(t, tc, listen(t))
}

// startServerOn is startServer on a given listener.
func startServerOn(t testing.TB, tc *tls.Config, lis net.Listener) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Config{
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: reg,
		TLS:        tc,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, addr: lis.Addr().String(), reg: reg}
}

// testWriter sends the server's log to the test log (warnings and errors only).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// routeConfig is a MetaProtocol-shaped route configuration: one virtual host, a method route
// splitting traffic between two subsets, and the default route.
func routeConfig(name, cluster string) *routev3.RouteConfiguration {
	catchAll := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{}}
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{
				{
					Name: "say-hello",
					Match: &routev3.RouteMatch{
						PathSpecifier: &routev3.RouteMatch_Prefix{},
						Headers: []*routev3.HeaderMatcher{{
							Name: "method",
							HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
								MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "sayHello"},
							}},
						}},
					},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
							Clusters: []*routev3.WeightedCluster_ClusterWeight{
								{Name: cluster + "-v1", Weight: wrapperspb.UInt32(80)},
								{Name: cluster + "-v2", Weight: wrapperspb.UInt32(20)},
							},
						}},
					}},
				},
				{
					Name:   "default",
					Match:  catchAll,
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
				},
			},
		}},
	}
}

// routes builds an Update argument from name → default cluster pairs.
func routes(pairs ...string) map[string]*routev3.RouteConfiguration {
	out := make(map[string]*routev3.RouteConfiguration)
	for i := 0; i+1 < len(pairs); i += 2 {
		out[pairs[i]] = routeConfig(pairs[i], pairs[i+1])
	}
	return out
}

// decode unmarshals and validates the route configurations of a response, as a proxy would.
func decode(t testing.TB, typeURL string, anys []*discoveryv3.Resource) map[string]*routev3.RouteConfiguration {
	t.Helper()
	out := make(map[string]*routev3.RouteConfiguration)
	for _, r := range anys {
		if r.GetResource().GetTypeUrl() != RouteType {
			t.Fatalf("resource %q has type %q, want %q", r.GetName(), r.GetResource().GetTypeUrl(), RouteType)
		}
		rc := &routev3.RouteConfiguration{}
		if err := r.GetResource().UnmarshalTo(rc); err != nil {
			t.Fatalf("unmarshal %q: %v", r.GetName(), err)
		}
		if err := rc.Validate(); err != nil {
			t.Fatalf("served route configuration %q is invalid: %v", rc.GetName(), err)
		}
		if r.GetName() != "" && r.GetName() != rc.GetName() {
			t.Fatalf("resource named %q carries route configuration %q", r.GetName(), rc.GetName())
		}
		out[rc.GetName()] = rc
	}
	if typeURL != RouteType {
		t.Fatalf("response type %q, want %q", typeURL, RouteType)
	}
	return out
}

// defaultCluster is the cluster of a route configuration's default route.
func defaultCluster(rc *routev3.RouteConfiguration) string {
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	return routes[len(routes)-1].GetRoute().GetCluster()
}

// received pairs a stream message with its receive error.
type received[T any] struct {
	msg *T
	err error
}

// streamReader receives a client stream's messages on its own goroutine, so tests can wait
// for the next one with a deadline.
type streamReader[T any] struct {
	ch chan received[T]
}

func newReader[T any](recv func() (*T, error)) *streamReader[T] {
	r := &streamReader[T]{ch: make(chan received[T], 64)}
	go func() {
		for {
			m, err := recv()
			r.ch <- received[T]{m, err}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *streamReader[T]) next(t testing.TB) *T {
	t.Helper()
	select {
	case m := <-r.ch:
		if m.err != nil {
			t.Fatalf("stream ended: %v", m.err)
		}
		return m.msg
	case <-time.After(recvTimeout):
		t.Fatalf("no response within %v", recvTimeout)
		return nil
	}
}

// sotwClient is a state-of-the-world discovery client on a real gRPC stream.
type sotwClient struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	*streamReader[discoveryv3.DiscoveryResponse]
	node    string
	typeURL string
}

func newSotwClient(t testing.TB, stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) *sotwClient {
	return &sotwClient{t: t, stream: stream, streamReader: newReader(stream.Recv), node: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", typeURL: RouteType}
}

// open starts a client stream that ends with the test.
func open[S any](t testing.TB, start func(context.Context, ...grpc.CallOption) (S, error)) S {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// adsSotw opens a state-of-the-world ADS stream.
func adsSotw(t testing.TB, conn *grpc.ClientConn) *sotwClient {
	return newSotwClient(t, open(t, discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources))
}

// rdsSotw opens a state-of-the-world stream on the route service.
func rdsSotw(t testing.TB, conn *grpc.ClientConn) *sotwClient {
	return newSotwClient(t, open(t, routeservice.NewRouteDiscoveryServiceClient(conn).StreamRoutes))
}

func (c *sotwClient) send(names []string, version, nonce string, nack error) {
	c.t.Helper()
	req := &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: c.node, Cluster: "test"},
		TypeUrl:       c.typeURL,
		ResourceNames: names,
		VersionInfo:   version,
		ResponseNonce: nonce,
	}
	if nack != nil {
		req.ErrorDetail = nackStatus(nack)
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send request: %v", err)
	}
}

// subscribe sends the first request of a stream.
func (c *sotwClient) subscribe(names ...string) { c.send(names, "", "", nil) }

// recv waits for the next response and checks and decodes its route configurations.
func (c *sotwClient) recv() (*discoveryv3.DiscoveryResponse, map[string]*routev3.RouteConfiguration) {
	c.t.Helper()
	resp := c.next(c.t)
	if resp.GetNonce() == "" {
		c.t.Fatal("response without a nonce")
	}
	return resp, decode(c.t, resp.GetTypeUrl(), wrap(resp))
}

// wrap gives a state-of-the-world response's resources the shape of delta ones, for decode.
func wrap(resp *discoveryv3.DiscoveryResponse) []*discoveryv3.Resource {
	var rs []*discoveryv3.Resource
	for _, a := range resp.GetResources() {
		rs = append(rs, &discoveryv3.Resource{Resource: a})
	}
	return rs
}

func nackStatus(err error) *rpcstatus.Status {
	return &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// histogramCount is the number of push latencies observed.
func histogramCount(t testing.TB, srv *testServer) uint64 {
	return metric(t, srv.m.push).GetHistogram().GetSampleCount()
}

// value is the value of a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	d := metric(t, m)
	if d.GetCounter() != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}

func metric(t testing.TB, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// ack acknowledges resp, keeping the subscription names.
func (c *sotwClient) ack(resp *discoveryv3.DiscoveryResponse, names ...string) {
	c.send(names, resp.GetVersionInfo(), resp.GetNonce(), nil)
}

// deltaClient is an incremental discovery client on a real gRPC stream.
type deltaClient struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	*streamReader[discoveryv3.DeltaDiscoveryResponse]
}

func newDeltaClient(t testing.TB, stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) *deltaClient {
	return &deltaClient{t: t, stream: stream, streamReader: newReader(stream.Recv)}
}

func adsDelta(t testing.TB, conn *grpc.ClientConn) *deltaClient {
	return newDeltaClient(t, open(t, discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources))
}

func rdsDelta(t testing.TB, conn *grpc.ClientConn) *deltaClient {
	return newDeltaClient(t, open(t, routeservice.NewRouteDiscoveryServiceClient(conn).DeltaRoutes))
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if req.TypeUrl == "" {
		req.TypeUrl = RouteType
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send delta request: %v", err)
	}
}

// recv waits for the next response and checks and decodes its route configurations.
func (c *deltaClient) recv() (*discoveryv3.DeltaDiscoveryResponse, map[string]*routev3.RouteConfiguration) {
	c.t.Helper()
	resp := c.next(c.t)
	if resp.GetNonce() == "" {
		c.t.Fatal("response without a nonce")
	}
	for _, r := range resp.GetResources() {
		if r.GetVersion() == "" {
			c.t.Fatalf("resource %q without a version", r.GetName())
		}
	}
	return resp, decode(c.t, resp.GetTypeUrl(), resp.GetResources())
}

func (c *deltaClient) ack(resp *discoveryv3.DeltaDiscoveryResponse) {
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: resp.GetNonce()})
}

// wantClusters fails unless got holds exactly the named route configurations with the given
// default clusters (name, cluster pairs).
func wantClusters(t testing.TB, got map[string]*routev3.RouteConfiguration, pairs ...string) {
	t.Helper()
	want := make(map[string]string)
	for i := 0; i+1 < len(pairs); i += 2 {
		want[pairs[i]] = pairs[i+1]
	}
	have := make(map[string]string)
	for n, rc := range got {
		have[n] = defaultCluster(rc)
	}
	if len(have) != len(want) {
		t.Fatalf("got route configurations %v, want %v", have, want)
	}
	for n, c := range want {
		if have[n] != c {
			t.Fatalf("got route configurations %v, want %v", have, want)
		}
	}
}

// versionOf is the version a server gives rc.
func versionOf(t testing.TB, rc *routev3.RouteConfiguration) string {
	t.Helper()
	r, err := buildResource(rc.GetName(), rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.version
}

var errRejected = errors.New("unknown cluster in route")

// sortedNames returns a response's resource names, sorted.
func sortedNames(m map[string]*routev3.RouteConfiguration) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// clone copies a route configuration, for tests that change one.
func clone(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	return proto.Clone(rc).(*routev3.RouteConfiguration)
}

// eventually fails the test unless cond becomes true within recvTimeout. It waits for the
// server to act on a request that has no response of its own.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(recvTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watching is the number of streams registered for name.
func (s *testServer) watching(name string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.watchers[name])
}

// waitWatching waits until n streams are registered for name.
func (s *testServer) waitWatching(t testing.TB, name string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d streams watching %s", n, name), func() bool { return s.watching(name) == n })
}

// waitSeen waits until every stream watching name has looked at the last Update, so that a
// response it causes is sent before any response to a later Update.
func (s *testServer) waitSeen(t testing.TB, name string) {
	t.Helper()
	eventually(t, "streams watching "+name+" saw the last Update", func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		for w := range s.watchers[name] {
			if len(w.notify) > 0 || w.pending.Load() != 0 {
				return false
			}
		}
		return true
	})
}

// waitNacks waits until n NACKs were counted.
func (s *testServer) waitNacks(t testing.TB, n float64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%v NACKs counted", n), func() bool {
		return value(t, s.m.nacks.WithLabelValues(typeLabel)) == n
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
