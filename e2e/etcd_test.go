package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
)

// etcdProvider is the key Dubbo's etcd registry writes for a provider.
func etcdProvider(root, iface, ip string, port int, params string) string {
	u := fmt.Sprintf("dubbo://%s:%d/%s?interface=%s&%s", ip, port, iface, iface, params)
	return "/" + root + "/" + iface + "/providers/" + url.QueryEscape(u)
}

func TestEtcdProvidersBecomeServiceEntries(t *testing.T) {
	env := harness.Load(t)
	c := newCluster(t, env)
	env.RequireComponent(t, harness.EtcdRegistry)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{env.EtcdRegistryAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	root := fmt.Sprintf("dubbo-e2e-%08x", rand.Uint32())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() { _, _ = cli.Delete(context.Background(), "/"+root+"/", clientv3.WithPrefix()) })
	put := func(key string, opts ...clientv3.OpOption) {
		t.Helper()
		if _, err := cli.Put(ctx, key, "", opts...); err != nil {
			t.Fatal(err)
		}
	}

	const iface = "com.example.pay.PaymentService"
	host := strings.ToLower(iface)
	p1 := etcdProvider(root, iface, "10.7.0.1", 20880, "application=payments&version=2.1.0&group=green&timestamp=1")
	put(p1)
	put("/" + root + "/" + iface + "/providers/" + url.QueryEscape("dubbo://payments.local:20880/"+iface)) // a host name: rejected
	// A provider whose lease ends (its process died) disappears with it.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put(etcdProvider(root, iface, "10.7.0.2", 20880, "application=payments&version=2.1.0"), clientv3.WithLease(lease.ID))

	name := fmt.Sprintf("etcd-e2e-%04x", rand.IntN(1<<16))
	cfg := writeFile(t, "registries.yaml", fmt.Sprintf(`apiVersion: meltemi.io/v1alpha1
kind: ServiceRegistry
metadata:
  name: %s
  namespace: %s
spec:
  kind: etcd
  address: %s
  options:
    root: %s
`, name, c.namespace, env.EtcdRegistryAddr, root))
	b := startBridge(t, c, "--config", cfg)
	b.waitReady(t, env)

	waitAddresses := func(want ...string) {
		t.Helper()
		env.Eventually(t, 20*time.Second, func() error {
			se, err := c.getServiceEntry(host)
			if len(want) == 0 {
				if !isNotFound(err) {
					return fmt.Errorf("ServiceEntry still there (err %v)", err)
				}
				return nil
			}
			if err != nil {
				return err
			}
			if got := addresses(se); !slices.Equal(got, want) {
				return fmt.Errorf("endpoints %v, want %v", got, want)
			}
			return nil
		})
	}
	waitAddresses("10.7.0.1", "10.7.0.2")
	se, err := c.getServiceEntry(host)
	if err != nil {
		t.Fatal(err)
	}
	if got := se.GetLabels()["meltemi.io/registry"]; got != name {
		t.Errorf("registry label %q", got)
	}
	for _, ep := range endpointsOf(se) {
		if ep.Address == "10.7.0.1" && (ep.Labels["version"] != "2.1.0" || ep.Labels["group"] != "green" || ep.Labels["application"] != "payments") {
			t.Errorf("endpoint labels %v", ep.Labels)
		}
	}
	if !hasLogLine(b.logs.String(), "registry item rejected", "registry="+name, "payments.local", "not an IP address") {
		t.Errorf("the malformed provider was not reported")
	}

	// The leased provider dies; then the last one is deregistered.
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	waitAddresses("10.7.0.1")
	if _, err := cli.Delete(ctx, p1); err != nil {
		t.Fatal(err)
	}
	waitAddresses()
}
