package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	redisclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/redis/v3"
	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/traffictest"
)

var (
	servicesGVR = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	secretsGVR  = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

// TestRedisKafkaZooKeeperOnIstiod applies Aeraki's Redis, Kafka and ZooKeeper examples
// unchanged and holds what a sidecar then receives from a real istiod to what they mean: the
// Redis proxy replaces the TCP proxy of each Redis Service's listener with the example's
// routes, mirror, fault, read policy and client password; the Redis cluster's cluster is
// Envoy's Redis cluster, the single server's cluster carries the Secret's password; every
// cluster the Redis routes and mirrors name is in CDS; Kafka and ZooKeeper listeners get their
// statistics filter before the TCP proxy, outbound and on the servers' inbound side; istiod
// reports nothing it could not build; the Redis objects' status says Accepted; and a changed
// Secret reaches the sidecar, a deleted one keeps the working configuration.
func TestRedisKafkaZooKeeperOnIstiod(t *testing.T) {
	env := harness.Load(t)
	env.RequireComponent(t, harness.Istiod)
	c := newCluster(t, env)
	ctx := context.Background()
	ns := c.namespace
	data, err := os.ReadFile("testdata/aeraki/redis-kafka-zookeeper.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := traffic.ParseObjects([]byte(strings.ReplaceAll(string(data), "NAMESPACE", ns)))
	if err != nil {
		t.Fatal(err)
	}
	gvrs := map[string]schema.GroupVersionResource{
		"Service": servicesGVR, "Secret": secretsGVR,
		"RedisService": redisv1.RedisServiceResource, "RedisDestination": redisv1.RedisDestinationResource,
	}
	t.Cleanup(func() {
		// istiod would keep serving the Services to later tests; the test API server has no
		// namespace controller to delete them.
		for _, o := range objs {
			if o.GetKind() == "Service" {
				_ = c.dyn.Resource(servicesGVR).Namespace(ns).Delete(context.Background(), o.GetName(), metav1.DeleteOptions{})
			}
		}
	})
	clusterIPs := map[string]string{}
	for _, o := range objs {
		gvr, ok := gvrs[o.GetKind()]
		if !ok {
			t.Fatalf("unexpected kind %s", o.GetKind())
		}
		created, err := c.dyn.Resource(gvr).Namespace(ns).Create(ctx, o, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s %s does not apply unchanged: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetKind() == "Service" {
			clusterIPs[o.GetName()], _, _ = unstructured.NestedString(created.Object, "spec", "clusterIP")
		}
	}

	b := startBridge(t, c, "--registry-namespace", ns, "--traffic=true", "--xds-listen", freeAddr(t),
		"--traffic-watch-namespace", ns, "--envoyfilter-namespace", ns, "--redis-secrets")
	b.waitReady(t, env)

	client := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "redis-client", Namespace: ns, Labels: map[string]string{"app": "redis-client"}})
	kafka := env.JoinSidecar(t, c.kube, harness.SidecarOptions{Name: "kafka-0", Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "kafka"}})

	fqdn := func(name string) string { return name + "." + ns + ".svc.cluster.local" }
	redisCluster, redisSingle := fqdn("redis-cluster"), fqdn("redis-single")
	clusterListener, singleListener := clusterIPs["redis-cluster"]+"_6379", clusterIPs["redis-single"]+"_6379"
	kafkaListener, zkListener := clusterIPs["my-release-kafka"]+"_9092", clusterIPs["my-release-zookeeper"]+"_2181"

	redisOn := func(v *harness.View, listener string) (*redisv3.RedisProxy, error) {
		f, err := v.Filter(listener, 0, traffic.RedisProxyFilterName)
		if err != nil {
			return nil, err
		}
		if err := traffictest.CheckListenerFilter(f); err != nil {
			return nil, err
		}
		p := &redisv3.RedisProxy{}
		return p, f.GetTypedConfig().UnmarshalTo(p)
	}
	v := client.WaitFor(45*time.Second, "Redis, Kafka and ZooKeeper filters", func(v *harness.View) error {
		for _, l := range []string{clusterListener, singleListener} {
			if _, err := redisOn(v, l); err != nil {
				return err
			}
		}
		return statsFilterBeforeTCPProxy(v, zkListener, 0, traffic.ZooKeeperProxyFilterName)
	})
	// Kafka's broker filter is a contrib extension the stock istio-proxy does not build: the
	// sidecar is never sent it, and Kafka's port keeps Istio's TCP proxy.
	if _, err := v.Filter(kafkaListener, 0, traffic.KafkaBrokerFilterName); err == nil {
		t.Errorf("%s: a stock sidecar was sent %s, which its proxy lacks", kafkaListener, traffic.KafkaBrokerFilterName)
	}
	if _, err := v.Filter(kafkaListener, 0, "envoy.filters.network.tcp_proxy"); err != nil {
		t.Errorf("%s: Kafka's port lost Istio's TCP proxy: %v", kafkaListener, err)
	}

	rp, _ := redisOn(v, clusterListener)
	pr := rp.GetPrefixRoutes()
	if len(pr.GetRoutes()) != 1 || pr.GetRoutes()[0].GetPrefix() != "cluster" || pr.GetRoutes()[0].GetCluster() != "outbound|6379||"+redisCluster {
		t.Errorf("%s: prefix routes %v, want cluster -> outbound|6379||%s", clusterListener, pr.GetRoutes(), redisCluster)
	}
	catchAll := pr.GetCatchAllRoute()
	if catchAll.GetCluster() != "outbound|6379||"+redisSingle {
		t.Errorf("%s: catch-all to %q, want outbound|6379||%s", clusterListener, catchAll.GetCluster(), redisSingle)
	}
	if m := catchAll.GetRequestMirrorPolicy(); len(m) != 1 || m[0].GetCluster() != "outbound|6379||"+redisCluster ||
		m[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 1000000 {
		t.Errorf("%s: mirror %v, want all of it to outbound|6379||%s", clusterListener, m, redisCluster)
	}
	if f := rp.GetFaults(); len(f) != 1 || f[0].GetFaultType() != redisv3.RedisProxy_RedisFault_ERROR || !slices.Equal(f[0].GetCommands(), []string{"GET"}) ||
		f[0].GetFaultEnabled().GetDefaultValue().GetNumerator() != 500000 {
		t.Errorf("%s: faults %v, want ERROR on half of the GETs", clusterListener, f)
	}
	if rp.GetSettings().GetReadPolicy() != redisv3.RedisProxy_ConnPoolSettings_REPLICA {
		t.Errorf("%s: read policy %v, want REPLICA", clusterListener, rp.GetSettings().GetReadPolicy())
	}
	sp, _ := redisOn(v, singleListener)
	if pw := sp.GetDownstreamAuthPasswords(); len(pw) != 1 || pw[0].GetInlineString() != "testredis123!" {
		t.Errorf("%s: downstream passwords %v, want the RedisService's", singleListener, pw)
	}
	requireClusters(t, client, "Redis routes", []string{"outbound|6379||" + redisCluster, "outbound|6379||" + redisSingle})

	// The clusters Meltemi replaced, as istiod serves them.
	cl := awaitCluster(t, client, "outbound|6379||"+redisCluster, func(cl *clusterv3.Cluster) error {
		if cl.GetClusterType().GetName() != "envoy.clusters.redis" {
			return fmt.Errorf("cluster type %v, want envoy.clusters.redis", cl.GetClusterDiscoveryType())
		}
		return nil
	})
	if err := traffictest.CheckCluster(cl); err != nil {
		t.Errorf("Redis cluster: %v", err)
	}
	if err := cl.GetClusterType().GetTypedConfig().UnmarshalTo(&redisclusterv3.RedisClusterConfig{}); err != nil {
		t.Errorf("Redis cluster config: %v", err)
	}
	password := func(cl *clusterv3.Cluster) string {
		opts := &redisv3.RedisProtocolOptions{}
		if a := cl.GetTypedExtensionProtocolOptions()[traffic.RedisProxyFilterName]; a == nil || a.UnmarshalTo(opts) != nil {
			return ""
		}
		return opts.GetAuthPassword().GetInlineString()
	}
	awaitCluster(t, client, "outbound|6379||"+redisSingle, func(cl *clusterv3.Cluster) error {
		if err := traffictest.CheckCluster(cl); err != nil {
			return err
		}
		if p := password(cl); p != "testredis" {
			return fmt.Errorf("upstream password %q, want the Secret's, trimmed", p)
		}
		return nil
	})

	// Kafka's server side: its inbound port keeps the TCP proxy, without the broker filter.
	kv := kafka.WaitFor(30*time.Second, "inbound TCP proxy of Kafka's port", func(v *harness.View) error {
		_, err := v.Filter("virtualInbound", 9092, "envoy.filters.network.tcp_proxy")
		return err
	})
	if _, err := kv.Filter("virtualInbound", 9092, traffic.KafkaBrokerFilterName); err == nil {
		t.Errorf("virtualInbound: the Kafka pod's stock sidecar was sent %s", traffic.KafkaBrokerFilterName)
	}

	for _, kind := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{{redisv1.RedisServiceResource, "redis-cluster"}, {redisv1.RedisServiceResource, "redis-single"},
		{redisv1.RedisDestinationResource, "redis-cluster"}, {redisv1.RedisDestinationResource, "redis-single"}} {
		env.Eventually(t, 20*time.Second, func() error {
			u, err := c.dyn.Resource(kind.gvr).Namespace(ns).Get(ctx, kind.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if conds := conditionStatuses(u.Object); conds[mpv1.ConditionAccepted] != "True" || conds[mpv1.ConditionResolvedRefs] != "True" {
				return fmt.Errorf("%s %s: conditions %v", kind.gvr.Resource, kind.name, conds)
			}
			return nil
		})
	}

	// A new password in the Secret reaches the sidecar; it appears in no Event.
	secret, err := c.dyn.Resource(secretsGVR).Namespace(ns).Get(ctx, "redis-service-secret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(secret.Object, "cm90YXRlZA==", "data", "password"); err != nil { // "rotated"
		t.Fatal(err)
	}
	if _, err := c.dyn.Resource(secretsGVR).Namespace(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitCluster(t, client, "outbound|6379||"+redisSingle, func(cl *clusterv3.Cluster) error {
		if p := password(cl); p != "rotated" {
			return fmt.Errorf("upstream password %q, want the rotated one", p)
		}
		return nil
	})
	// The Secret deleted: reported, and the working configuration kept.
	if err := c.dyn.Resource(secretsGVR).Namespace(ns).Delete(ctx, "redis-service-secret", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually(t, 20*time.Second, func() error {
		u, err := c.dyn.Resource(redisv1.RedisDestinationResource).Namespace(ns).Get(ctx, "redis-single", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if conds := conditionStatuses(u.Object); conds[mpv1.ConditionAccepted] != "False" {
			return fmt.Errorf("RedisDestination redis-single without its Secret: conditions %v", conds)
		}
		return nil
	})
	if _, err := c.dyn.Resource(envoyFiltersGVR).Namespace(ns).Get(ctx, "meltemi-"+redisSingle+"-6379-outbound", metav1.GetOptions{}); err != nil {
		t.Errorf("the outbound EnvoyFilter of %s was withdrawn with its Secret: %v", redisSingle, err)
	}
	awaitCluster(t, client, "outbound|6379||"+redisSingle, func(cl *clusterv3.Cluster) error {
		if p := password(cl); p != "rotated" {
			return fmt.Errorf("upstream password %q, want the last one kept", p)
		}
		return nil
	})

	events, err := c.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Not followed by a letter or digit: the namespace's name contains "testredis".
	passwords := regexp.MustCompile(`(testredis123!|testredis|rotated)([^A-Za-z0-9]|$)`)
	for _, e := range events.Items {
		if passwords.MatchString(e.Message) {
			t.Errorf("event %s quotes a password: %s", e.Name, e.Message)
		}
	}
	if m := passwords.FindString(b.logs.String()); m != "" {
		t.Errorf("the host's log quotes the password %q", m)
	}

	efs, err := c.dyn.Resource(envoyFiltersGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var written []*unstructured.Unstructured
	for i := range efs.Items {
		written = append(written, &efs.Items[i])
		if err := traffictest.CheckEnvoyFilter(&efs.Items[i]); err != nil {
			t.Errorf("EnvoyFilter %s: %v", efs.Items[i].GetName(), err)
		}
	}
	for _, sc := range []*harness.Sidecar{client, kafka} {
		for _, p := range sc.UnappliedPatches(sc.Snapshot(), "istio-system", written) {
			t.Errorf("%s: %s", sc.Name, p)
		}
		sc.RequireNoProblems(t)
	}
}

// statsFilterBeforeTCPProxy checks that a listener's filter chain (of a destination port, for
// virtualInbound) runs the named filter, valid, right before the TCP proxy.
func statsFilterBeforeTCPProxy(v *harness.View, listener string, port uint32, name string) error {
	f, err := v.Filter(listener, port, name)
	if err != nil {
		return err
	}
	if err := traffictest.CheckListenerFilter(f); err != nil {
		return err
	}
	chains, err := v.FilterChains(listener)
	if err != nil {
		return err
	}
	for _, fc := range chains {
		if port != 0 && fc.DestinationPort != port {
			continue
		}
		names := fc.FilterNames()
		i := slices.Index(names, name)
		if i < 0 {
			continue
		}
		if i+1 >= len(names) || names[i+1] != "envoy.filters.network.tcp_proxy" {
			return fmt.Errorf("%s: filters %v: %s not right before the TCP proxy", listener, names, name)
		}
		return nil
	}
	return fmt.Errorf("%s: no filter chain with %s", listener, name)
}

// awaitCluster waits until the sidecar's CDS has the cluster and ok accepts it.
func awaitCluster(t *testing.T, sc *harness.Sidecar, name string, ok func(*clusterv3.Cluster) error) *clusterv3.Cluster {
	t.Helper()
	var got *clusterv3.Cluster
	if _, err := sc.Await(30*time.Second, func(v *harness.View) error {
		cl, err := v.Cluster(name)
		if err != nil {
			return err
		}
		got = cl
		return ok(cl)
	}); err != nil {
		t.Fatalf("%s cluster %s: %v", sc.Name, name, err)
	}
	return got
}
