package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	redisv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/redis_proxy/v3"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meltemi-mesh/meltemi/api/istio"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/traffic"
	"github.com/meltemi-mesh/meltemi/traffic/proxies"
)

type explainOptions struct {
	host, kubeconfig, namespace string
	port                        uint16
	attrs                       []string
	files                       []string
	proxy, proxySelector        string
}

func newRoutesCmd() *cobra.Command {
	var o explainOptions
	explain := &cobra.Command{
		Use:   "explain --host HOST --port PORT [--attr NAME=VALUE]... [-f FILE]...",
		Short: "Print the route and clusters a request with given attributes takes",
		Long: `Prints the route and clusters a request with the given attributes takes, translating the rules
exactly as the running translator does. For a Redis port (tcp-redis-…) the attribute is the
command's key: --attr key=user:42 prints the route, cluster and mirrors of that key. Rules and
services come from the files given with -f (YAML or JSON, "-" for stdin), or else from the
cluster.`,
		Args:    cobra.NoArgs,
		PreRunE: requireFlags("host", "port"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			attrs := map[string]string{}
			for _, a := range o.attrs {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return usageError(cmd, fmt.Errorf("--attr: want NAME=VALUE, not %q", a))
				}
				attrs[k] = v
			}
			return explainRoute(cmd.Context(), o, attrs, cmd.OutOrStdout())
		},
	}
	fs := explain.Flags()
	fs.StringVar(&o.host, "host", "", "service host (required)")
	fs.Uint16Var(&o.port, "port", 0, "service port (required)")
	fs.StringArrayVar(&o.attrs, "attr", nil, "request attribute NAME=VALUE (repeatable)")
	fs.StringArrayVarP(&o.files, "filename", "f", nil, "file of objects (repeatable; - for stdin)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then in-cluster configuration")
	fs.StringVar(&o.namespace, "watch-namespace", "", "read rules and services from this namespace only (default: all)")
	fs.StringVar(&o.proxy, "proxy", proxies.DefaultStock, "as meltemi run's --proxy: the profile of the proxies EnvoyFilters reach")
	fs.StringVar(&o.proxySelector, "metaprotocol-proxy-selector", "", "as meltemi run's --metaprotocol-proxy-selector")
	return groupCmd("routes", "Explain how the translated traffic rules route requests", explain)
}

func explainRoute(ctx context.Context, o explainOptions, attrs map[string]string, stdout io.Writer) error {
	var objs []*unstructured.Unstructured
	var err error
	if len(o.files) > 0 {
		objs, err = readObjectFiles(o.files)
	} else {
		objs, err = listTrafficObjects(ctx, o.kubeconfig, o.namespace)
	}
	if err != nil {
		return err
	}
	sel, err := parseSelector(o.proxySelector)
	if err != nil {
		return fmt.Errorf("--metaprotocol-proxy-selector: %w", err)
	}
	opts := traffic.Options{Proxy: o.proxy, ProxySelector: sel}
	if err := opts.Validate(); err != nil {
		return err
	}
	return explain(stdout, objs, opts, o.host, uint32(o.port), attrs)
}

func readObjectFiles(files []string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, name := range files {
		var data []byte
		var err error
		if name == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			return nil, err
		}
		o, err := traffic.ParseObjects(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// listTrafficObjects reads what the translator reads from the cluster.
func listTrafficObjects(ctx context.Context, kubeconfig, namespace string) ([]*unstructured.Unstructured, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating dynamic client: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, gvr := range []schema.GroupVersionResource{mpv1.MetaRouterResource, mpv1.ApplicationProtocolResource,
		istio.DestinationRuleResource, istio.ServiceEntryResource, istio.VirtualServiceResource,
		redisv1.RedisServiceResource, redisv1.RedisDestinationResource, {Version: "v1", Resource: "services"}, {Version: "v1", Resource: "secrets"}} {
		list, err := dyn.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
		if gvr.Resource == "secrets" && err != nil {
			// Redis passwords only: without them such ports are explained as plain TCP.
			fmt.Fprintf(os.Stderr, "warning: cannot list Secrets (%v); ports with Redis passwords from Secrets are shown as plain TCP\n", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", gvr.Resource, err)
		}
		for i := range list.Items {
			objs = append(objs, &list.Items[i])
		}
	}
	return objs, nil
}

// explain translates objs and prints where a request to host:port with attrs goes.
func explain(w io.Writer, objs []*unstructured.Unstructured, opts traffic.Options, host string, port uint32, attrs map[string]string) error {
	in, problems := traffic.Decode(objs)
	out := traffic.Translate(in, opts)
	name := traffic.RouteConfigName(host, port)
	rc := out.Routes[name]
	if rp := out.RedisProxies[name]; rc == nil && rp != nil {
		return explainRedis(w, rp, name, attrs, problems, out.Problems)
	}
	if rc == nil {
		return fmt.Errorf("no route configuration %s: %s", name, whyNoRoutes(in, out, host, port))
	}
	d, err := traffic.Evaluate(rc, attrs)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "route configuration\t%s\n", name)
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	if d.Route == nil {
		// As in Aeraki: a MetaRouter's routes are the whole table, without a catch-all.
		fmt.Fprintf(tw, "route\tnone of %d matches: the proxy answers \"no route\"\n", len(routes))
		return tw.Flush()
	}
	fmt.Fprintf(tw, "route\t%s (%d of %d)\n", d.Route.GetName(), d.Index+1, len(routes))
	for key, res := range out.Routers {
		if slices.Contains(res.Hosts, host) {
			fmt.Fprintf(tw, "MetaRouter\t%s\n", key)
			for _, warning := range res.Warnings {
				fmt.Fprintf(tw, "warning\t%s\n", warning)
			}
		}
	}
	fmt.Fprintf(tw, "match\t%s\n", traffic.DescribeMatch(d.Route.GetMatch().GetHeaders()))
	for _, c := range d.Clusters {
		fmt.Fprintf(tw, "cluster\t%s (%g%%)\n", c.Name, c.Percent)
	}
	for _, m := range d.Mirrors {
		fmt.Fprintf(tw, "mirror\t%s (%g%%)\n", m.Name, m.Percent)
	}
	for _, hp := range d.Route.GetRoute().GetHashPolicy() {
		fmt.Fprintf(tw, "hash by\t%s\n", hp.GetHeader().GetHeaderName())
	}
	for _, h := range d.Route.GetRequestHeadersToAdd() {
		fmt.Fprintf(tw, "request mutation\t%s=%s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	for _, h := range d.Route.GetResponseHeadersToAdd() {
		fmt.Fprintf(tw, "response mutation\t%s=%s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	// Invalid MetaRouters naming the host are not applied: say so, they may be why a route is missing.
	names := map[string]bool{}
	for _, mr := range in.MetaRouters {
		if slices.Contains(mr.Spec.Hosts, host) {
			names[mr.Namespace+"/"+mr.Name] = true
		}
	}
	for _, p := range slices.Concat(problems, out.Problems) {
		if p.Kind == mpv1.MetaRouterKind.Kind && p.Severity == traffic.SeverityError && names[p.Namespace+"/"+p.Name] {
			fmt.Fprintf(tw, "not applied\t%s/%s: %s\n", p.Namespace, p.Name, p.Message)
		}
	}
	return tw.Flush()
}

// explainRedis prints where the Redis proxy of a host's port sends a command with the key
// attribute, and what is wrong with the Redis objects.
func explainRedis(w io.Writer, rp *redisv3.RedisProxy, name string, attrs map[string]string, problems ...[]traffic.Problem) error {
	key, ok := attrs["key"]
	if !ok {
		return fmt.Errorf("%s is a Redis port: give the command's key with --attr key=KEY", name)
	}
	d := traffic.EvaluateRedis(rp, key)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "redis proxy\t%s\n", name)
	switch {
	case d.Cluster == "":
		fmt.Fprintf(tw, "route\tnone of %d prefixes matches and there is no catch-all: the command fails\n", len(rp.GetPrefixRoutes().GetRoutes()))
		return tw.Flush()
	case d.CatchAll:
		fmt.Fprintf(tw, "route\tcatch-all (no prefix matches)\n")
	default:
		fmt.Fprintf(tw, "route\tprefix %q\n", d.Prefix)
	}
	fmt.Fprintf(tw, "cluster\t%s\n", d.Cluster)
	if d.Key != key {
		fmt.Fprintf(tw, "key sent\t%s\n", d.Key)
	}
	for _, m := range d.Mirrors {
		which := "all commands"
		if m.WritesOnly {
			which = "writes only"
		}
		fmt.Fprintf(tw, "mirror\t%s (%g%%, %s)\n", m.Cluster, m.Percent, which)
	}
	for _, f := range rp.GetFaults() {
		cmds := "all commands"
		if len(f.GetCommands()) > 0 {
			cmds = strings.Join(f.GetCommands(), ", ")
		}
		fmt.Fprintf(tw, "fault\t%s on %g%% of %s\n", f.GetFaultType(), float64(f.GetFaultEnabled().GetDefaultValue().GetNumerator())/10000, cmds)
	}
	for _, p := range slices.Concat(problems...) {
		if p.Kind == redisv1.RedisServiceKind.Kind || p.Kind == redisv1.RedisDestinationKind.Kind {
			fmt.Fprintf(tw, "%s\t%s %s/%s: %s\n", strings.ToLower(string(p.Severity)), p.Kind, p.Namespace, p.Name, p.Message)
		}
	}
	return tw.Flush()
}

// whyNoRoutes says why a host's port has no route configuration.
func whyNoRoutes(in traffic.Input, out *traffic.Output, host string, port uint32) string {
	for _, se := range in.ServiceEntries {
		if !slices.Contains(se.Spec.Hosts, host) {
			continue
		}
		for _, p := range se.Spec.Ports {
			if p.Number != port {
				continue
			}
			for _, pr := range out.Problems {
				if pr.Kind == "ServiceEntry" && pr.Namespace == se.Namespace && pr.Name == se.Name &&
					(strings.Contains(pr.Message, p.Name) || strings.Contains(pr.Message, fmt.Sprintf("port %d", port))) {
					return pr.Message
				}
			}
			return fmt.Sprintf("port %s is not a MetaProtocol or Redis port (tcp-metaprotocol-<protocol>-…, tcp-redis-…); native Dubbo and Thrift ports carry their routes in their EnvoyFilter", p.Name)
		}
		return fmt.Sprintf("ServiceEntry %s/%s has no port %d", se.Namespace, se.Name, port)
	}
	return "no ServiceEntry defines the host"
}
