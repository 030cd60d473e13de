// Command dubbo-seed registers a few realistic Dubbo providers in ZooKeeper, the way Dubbo
// applications do, and keeps their ephemeral nodes alive until it is stopped.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/e2e/dubbo"
)

func main() {
	addr := flag.String("zk", "127.0.0.1:2181", "ZooKeeper address")
	root := flag.String("root", "dubbo", "Dubbo registry root")
	flag.Parse()

	conn, _, err := zk.Connect([]string{*addr}, 30*time.Second, zk.WithLogInfo(false))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dubbo-seed:", err)
		os.Exit(1)
	}
	defer conn.Close()
	providers := []dubbo.Provider{
		{IP: "10.10.1.11", Port: 20880, Interface: "org.apache.dubbo.samples.GreetingService", Application: "greeting-provider", Version: "1.0.0", Methods: []string{"greet", "greetAsync"}},
		{IP: "10.10.1.12", Port: 20880, Interface: "org.apache.dubbo.samples.GreetingService", Application: "greeting-provider", Version: "2.0.0", Methods: []string{"greet", "greetAsync"}},
		{IP: "10.10.2.21", Port: 20880, Interface: "com.example.order.OrderService", Application: "order-service", Version: "1.2.0", Group: "eu", Methods: []string{"createOrder", "getOrder", "cancelOrder"}, Weight: 100},
		{IP: "10.10.2.22", Port: 20881, Interface: "com.example.order.OrderService", Application: "order-service", Version: "1.2.0", Group: "us", Methods: []string{"createOrder", "getOrder", "cancelOrder"}},
		{IP: "10.10.3.31", Port: 50051, Protocol: "tri", Interface: "com.example.user.UserService", Application: "user-service", Version: "3.0.0", Methods: []string{"getUser"}},
	}
	for _, p := range providers {
		node, err := dubbo.Register(conn, *root, p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dubbo-seed:", err)
			os.Exit(1)
		}
		slog.Info("registered provider", "interface", p.Interface, "address", fmt.Sprintf("%s:%d", p.IP, p.Port), "node", node)
	}
	if err := seedApplication(conn, *root); err != nil {
		fmt.Fprintln(os.Stderr, "dubbo-seed:", err)
		os.Exit(1)
	}
	// Ephemeral nodes live as long as this session, like a running Dubbo application.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

// seedApplication registers a Dubbo 3 application the way it does with register-mode=instance
// and metadata-type=remote: its instances under /services, its revision's metadata, and the
// mapping from its interface to it; no interface-level providers.
func seedApplication(conn *zk.Conn, root string) error {
	const (
		app      = "inventory-service"
		iface    = "com.example.inventory.InventoryService"
		revision = "7f3a9c2e41d0"
	)
	services := []dubbo.MetadataService{{Interface: iface, Version: "1.0.0", Protocol: "tri", Port: 50051, Methods: []string{"reserve", "release"}}}
	if err := dubbo.PublishMetadata(conn, root, app, revision, services); err != nil {
		return err
	}
	for _, ip := range []string{"10.10.4.41", "10.10.4.42"} {
		in := dubbo.Instance{Application: app, IP: ip, Port: 20880, Revision: revision, StorageType: "remote",
			Endpoints: []dubbo.Endpoint{{Protocol: "dubbo", Port: 20880}, {Protocol: "tri", Port: 50051}}}
		node, err := dubbo.RegisterInstance(conn, in)
		if err != nil {
			return err
		}
		slog.Info("registered application instance", "application", app, "node", node)
	}
	if err := dubbo.PublishMapping(conn, root, iface, app); err != nil {
		return err
	}
	slog.Info("mapped interface to application", "interface", iface, "application", app)
	return nil
}
