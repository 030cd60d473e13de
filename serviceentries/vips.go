package serviceentries

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/serviceentries/vip"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// SeedVIPs reads back the virtual IPs of the ServiceEntries already written, so hosts keep
// their addresses across restarts and leader changes.
func SeedVIPs(ctx context.Context, dyn dynamic.Interface, namespace string, vips *vip.Allocator) error {
	kind := synckube.ServiceEntryKind()
	gvr := kind.GVK.GroupVersion().WithResource(kind.Resource)
	list, err := dyn.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: v1alpha1.LabelManagedBy + "=" + v1alpha1.ManagedByValue,
	})
	if err != nil {
		return fmt.Errorf("reading existing ServiceEntries for their virtual IPs: %w", err)
	}
	for _, se := range list.Items {
		hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
		addrs, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "addresses")
		if len(hosts) == 1 && len(addrs) == 1 {
			vips.Seed(hosts[0], addrs[0])
		}
	}
	return nil
}
