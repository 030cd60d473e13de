// Package xds serves route configurations to Envoy and MetaProtocol proxies over xDS.
//
// The server speaks the route discovery protocol (RDS) in both variants, state of the world and
// incremental (delta), on the aggregated service (ADS) and on the standalone route service. It
// serves one resource type, envoy.config.route.v3.RouteConfiguration, named `<host>_<port>`;
// MetaProtocol proxies subscribe to one name per subscription.
//
// Versions are content hashes, so every replica reports the same version for the same content
// and a client that reconnects to another replica is not sent what it already has. Each replica
// serves from its own copy of the desired set (given by Update); there is no leader.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Config configures a Server.
type Config struct {
	Logger     *slog.Logger          // nil: slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept on a private registry
	// TLS is nil for plaintext. With ClientCAs set and ClientAuth RequireAndVerifyClientCert it
	// is mutual TLS.
	TLS *tls.Config
}

// Server is an xDS server for route configurations. Update may be called at any time, before
// or while Serve runs, from any goroutine.
type Server struct {
	log *slog.Logger
	tls *tls.Config
	m   *metrics

	updateMu sync.Mutex // serialises Update: each one diffs against the previous

	mu       sync.RWMutex
	snap     snapshot
	watchers map[string]map[*watcher]struct{} // streams subscribed to a name
	wildcard map[*watcher]struct{}            // streams subscribed to every name ("*")

	nonce atomic.Uint64
}

// New returns a server that answers no request until the first Update.
func New(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var tc *tls.Config
	if cfg.TLS != nil {
		if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
			return nil, errors.New("xds: TLS configuration has no server certificate")
		}
		tc = cfg.TLS.Clone()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Server{
		log:      log,
		tls:      tc,
		m:        m,
		watchers: make(map[string]map[*watcher]struct{}),
		wildcard: make(map[*watcher]struct{}),
	}, nil
}

// Serve runs a gRPC server on lis with the aggregated discovery service, the route discovery
// service and the gRPC health service, until ctx ends (then it returns nil) or serving fails.
// Open streams are cut when ctx ends; proxies reconnect to another replica.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	opts := []grpc.ServerOption{
		// Find dead peers, so their streams end and stop counting as connected.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Requests are small ACKs, so fixed windows cost nothing; they also turn off gRPC's
		// bandwidth probing, which otherwise answers every ACK with a PING round trip:
		// two more writes and reads per stream and update.
		grpc.InitialWindowSize(requestWindow),
		grpc.InitialConnWindowSize(requestWindow),
	}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	gs := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, ads{s: s})
	routeservice.RegisterRouteDiscoveryServiceServer(gs, rds{s: s})
	healthpb.RegisterHealthServer(gs, health.NewServer()) // SERVING: every replica serves

	s.log.Info("xDS server listening", "addr", lis.Addr().String(), "tls", s.tls != nil,
		"mtls", s.tls != nil && s.tls.ClientAuth == tls.RequireAndVerifyClientCert)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
		// Not GracefulStop: xDS streams never end on their own.
		gs.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("serve xDS on %s: %w", lis.Addr(), err)
	}
}

// requestWindow is the HTTP/2 flow-control window the server grants each client, per stream
// and per connection.
const requestWindow = 1 << 20

func (s *Server) nextNonce() string { return strconv.FormatUint(s.nonce.Add(1), 10) }

const (
	apiSotw  = "sotw"
	apiDelta = "delta"
	apiFetch = "fetch"
	// typeLabel is the metrics label of the one type served.
	typeLabel = "RouteConfiguration"
)

type ads struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (a ads) StreamAggregatedResources(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return a.s.serveSotw(stream, "")
}

func (a ads) DeltaAggregatedResources(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return a.s.serveDelta(stream, "")
}

type rds struct {
	routeservice.UnimplementedRouteDiscoveryServiceServer
	s *Server
}

// On the route service the type is implied, so a request may leave it out.

func (r rds) StreamRoutes(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return r.s.serveSotw(stream, RouteType)
}

func (r rds) DeltaRoutes(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return r.s.serveDelta(stream, RouteType)
}

// FetchRoutes answers with the requested resources that exist (all of them when none or "*" is
// named).
func (r rds) FetchRoutes(_ context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if t := req.GetTypeUrl(); t != "" && t != RouteType {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported type %q: this server serves %s", t, RouteType)
	}
	snap := r.s.current()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "no route configurations yet")
	}
	var sel selection
	sel.change(req.GetResourceNames(), nil)
	sel.wildcard = sel.wildcard || len(req.GetResourceNames()) == 0
	res := sel.pick(snap)
	r.s.m.pushes.WithLabelValues(typeLabel, apiFetch).Inc()
	return &discoveryv3.DiscoveryResponse{VersionInfo: setVersion(res), Resources: anys(res), TypeUrl: RouteType}, nil
}
