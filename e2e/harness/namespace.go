package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

var (
	namespaceResource    = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	serviceEntryResource = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}
	nonDNS               = regexp.MustCompile(`[^a-z0-9-]+`)
)

// Namespace creates a namespace named after the test (prefix, the test's name, 32 random bits)
// and removes it, with the ServiceEntries in it, when the test ends. The e2e API server runs no
// controller manager, so the cleanup finalizes the namespace itself.
func Namespace(t testing.TB, client dynamic.Interface, prefix string) string {
	t.Helper()
	base := nonDNS.ReplaceAllString(strings.ToLower(t.Name()), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.Trim(prefix+"-"+base, "-") + "-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name},
	}}
	if _, err := client.Resource(namespaceResource).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() { DeleteNamespace(t, client, name) })
	return name
}

// DeleteNamespace removes a namespace made by Namespace before the test ends (a benchmark pass
// that needs a clean slate); the cleanup then finds it gone.
func DeleteNamespace(t testing.TB, client dynamic.Interface, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := client.Resource(serviceEntryResource).Namespace(name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Logf("cleanup: deleting ServiceEntries in %s: %v", name, err)
	}
	if err := client.Resource(namespaceResource).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Logf("cleanup: deleting namespace %s: %v", name, err)
		return
	}
	ns, err := client.Resource(namespaceResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	_ = unstructured.SetNestedSlice(ns.Object, []any{}, "spec", "finalizers")
	if _, err := client.Resource(namespaceResource).Update(ctx, ns, metav1.UpdateOptions{}, "finalize"); err != nil && !apierrors.IsNotFound(err) {
		t.Logf("cleanup: finalizing namespace %s: %v", name, err)
	}
}
