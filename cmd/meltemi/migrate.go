package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/portname"
	"github.com/meltemi-mesh/meltemi/traffic"
)

const migrateLong = `Looks for what stands in the way of moving from Aeraki and dubbo2istio to Meltemi: the
shared CRDs installed by another chart (Helm then skips Meltemi's), a running Aeraki,
EnvoyFilters of others on the listeners Meltemi patches, hosts defined both by Meltemi's
ServiceEntries and by others (dubbo2istio's aeraki-<host>), and hosts Meltemi withholds
because only others define them. Exits 1 when it finds anything.`

func newMigrateCmd() *cobra.Command {
	var kubeconfig, efNamespace string
	check := &cobra.Command{
		Use:   "check",
		Short: "Report what stands in the way of moving from Aeraki and dubbo2istio",
		Long:  migrateLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return migrateCheck(cmd.Context(), kubeconfig, efNamespace, cmd.OutOrStdout())
		},
	}
	check.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then in-cluster configuration")
	check.Flags().StringVar(&efNamespace, "envoyfilter-namespace", traffic.DefaultNamespace, "namespace of Meltemi's EnvoyFilters")
	return groupCmd("migrate", "Prepare a move from Aeraki and dubbo2istio", check)
}

// Names of the CRDs Meltemi shares with Aeraki.
var sharedCRDs = []string{
	"metarouters.metaprotocol.aeraki.io",
	"applicationprotocols.metaprotocol.aeraki.io",
	"dubboauthorizationpolicies.dubbo.aeraki.io",
	"redisservices.redis.aeraki.io",
	"redisdestinations.redis.aeraki.io",
}

var (
	crdResource        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	deploymentResource = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// finding is one line of the check's report.
type finding struct{ what, detail string }

func migrateCheck(ctx context.Context, kubeconfig, efNamespace string, stdout io.Writer) error {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}
	findings, err := migrationFindings(ctx, dyn, efNamespace)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\n", f.what, f.detail)
	}
	if len(findings) == 0 {
		fmt.Fprintln(tw, "ok\tnothing stands in the way")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(findings) > 0 {
		return fmt.Errorf("%d findings", len(findings))
	}
	return nil
}

func migrationFindings(ctx context.Context, dyn dynamic.Interface, efNamespace string) ([]finding, error) {
	var out []finding
	for _, name := range sharedCRDs {
		crd, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			out = append(out, finding{"crd missing", name + ": install the chart's CRDs (charts/meltemi/crds)"})
		case err != nil:
			return nil, fmt.Errorf("reading CRD %s: %w", name, err)
		case crd.GetLabels()["app.kubernetes.io/part-of"] != "meltemi":
			out = append(out, finding{"crd foreign", name + ": installed by another chart (Aeraki?); Helm skips existing CRDs, so " +
				"apply Meltemi's: kubectl apply --server-side --force-conflicts -f charts/meltemi/crds/"})
		}
	}

	deps, err := dyn.Resource(deploymentResource).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("listing Deployments: %w", err)
	}
	if deps != nil {
		for _, d := range deps.Items {
			if name := d.GetName(); name == "aeraki" || d.GetLabels()["app"] == "aeraki" {
				replicas, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
				if replicas > 0 {
					out = append(out, finding{"aeraki running", fmt.Sprintf("Deployment %s/%s (%d replicas) patches the same listeners: scale it to 0",
						d.GetNamespace(), d.GetName(), replicas)})
				}
			}
		}
	}

	efs, err := listAll(ctx, dyn, istio.EnvoyFilterResource, "")
	if err != nil {
		return nil, err
	}
	var ours, others []*unstructured.Unstructured
	for _, ef := range efs {
		if traffic.Owned(ef) {
			ours = append(ours, ef)
		} else {
			others = append(others, ef)
		}
	}
	for _, p := range traffic.ListenerConflicts(ours, others) {
		out = append(out, finding{"envoyfilter conflict", fmt.Sprintf("%s/%s %s", p.Namespace, p.Name, p.Message)})
	}
	for _, ef := range others {
		if strings.HasPrefix(ef.GetName(), "aeraki-") {
			out = append(out, finding{"aeraki envoyfilter", fmt.Sprintf("%s/%s: delete it once Meltemi's are in %s", ef.GetNamespace(), ef.GetName(), efNamespace)})
		}
	}

	ses, err := listAll(ctx, dyn, istio.ServiceEntryResource, "")
	if err != nil {
		return nil, err
	}
	owners := map[string][]string{} // host -> entries, Meltemi's marked
	for _, se := range ses {
		hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
		id := se.GetNamespace() + "/" + se.GetName()
		if traffic.Owned(se) {
			id += " (meltemi)"
		}
		for _, h := range hosts {
			owners[h] = append(owners[h], id)
		}
		if !traffic.Owned(se) && strings.HasPrefix(se.GetName(), "aeraki-") && hasNativeDubboPort(se) {
			out = append(out, finding{"dubbo2istio entry", fmt.Sprintf("%s: Meltemi withholds its hosts %v until it is deleted "+
				"(--port-naming=dubbo2istio keeps its tcp-dubbo port names)", id, hosts)})
		}
	}
	for _, h := range slices.Sorted(maps.Keys(owners)) {
		ids := owners[h]
		mine := slices.ContainsFunc(ids, func(id string) bool { return strings.HasSuffix(id, " (meltemi)") })
		if mine && len(ids) > 1 {
			slices.Sort(ids)
			out = append(out, finding{"host in two entries", fmt.Sprintf("%s: %s; Istio merges them: delete the others", h, strings.Join(ids, ", "))})
		}
	}
	return out, nil
}

func hasNativeDubboPort(se *unstructured.Unstructured) bool {
	ports, _, _ := unstructured.NestedSlice(se.Object, "spec", "ports")
	for _, p := range ports {
		name, _, _ := unstructured.NestedString(p.(map[string]any), "name")
		if kind, _, err := portname.Parse(name); err == nil && kind == portname.Dubbo {
			return true
		}
	}
	return false
}

func listAll(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, namespace string) ([]*unstructured.Unstructured, error) {
	list, err := dyn.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errors.New(gvr.Resource + ": not served (are Istio's CRDs installed?)")
		}
		return nil, fmt.Errorf("listing %s: %w", gvr.Resource, err)
	}
	out := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}
