package xds_test

import (
	"context"
	"log/slog"
	"net"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meltemi-mesh/meltemi/sync/xds"
)

func Example() {
	srv, err := xds.New(xds.Config{Logger: slog.Default(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		panic(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := srv.Serve(ctx, lis); err != nil {
			slog.Error("xDS server failed", "err", err)
		}
	}()

	// The translator hands over the complete desired set whenever it changes.
	srv.Update(map[string]*routev3.RouteConfiguration{
		"greeter.dubbo_20880": {
			Name: "greeter.dubbo_20880",
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "greeter.dubbo_20880",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|20880||greeter.dubbo"},
					}},
				}},
			}},
		},
	})
}
