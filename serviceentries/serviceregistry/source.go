// Package serviceregistry turns ServiceRegistry objects (from a YAML file or the cluster) into
// running, supervised registry plugins, and reports their status back.
package serviceregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// LoadFile reads ServiceRegistry objects from a YAML file (several documents, or a List).
func LoadFile(path string) ([]v1alpha1.ServiceRegistry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading registry config: %w", err)
	}
	return Parse(data)
}

// Parse decodes ServiceRegistry objects from YAML or JSON documents.
func Parse(data []byte) ([]v1alpha1.ServiceRegistry, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []v1alpha1.ServiceRegistry
	for doc := 1; ; doc++ {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		items := []unstructured.Unstructured{u}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", doc, err)
			}
			items = list.Items
		}
		for _, item := range items {
			sr, err := FromUnstructured(&item)
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", doc, err)
			}
			out = append(out, sr)
		}
	}
	return out, nil
}

// FromUnstructured converts and checks one ServiceRegistry object.
func FromUnstructured(u *unstructured.Unstructured) (v1alpha1.ServiceRegistry, error) {
	var sr v1alpha1.ServiceRegistry
	if gvk := u.GroupVersionKind(); gvk.Group != v1alpha1.Group || gvk.Kind != "ServiceRegistry" {
		return sr, fmt.Errorf("%s %q is not a %s ServiceRegistry", gvk.Kind, u.GetName(), v1alpha1.Group)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &sr, true); err != nil {
		return sr, fmt.Errorf("ServiceRegistry %q: %w", u.GetName(), err)
	}
	return sr, Validate(sr)
}

// Validate checks what the CRD schema checks, for registries that come from a file.
func Validate(sr v1alpha1.ServiceRegistry) error {
	var problems []string
	if errs := validation.IsDNS1123Label(sr.Name); len(errs) > 0 {
		problems = append(problems, "metadata.name: "+strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(sr.Spec.Kind); len(errs) > 0 {
		problems = append(problems, "spec.kind: "+strings.Join(errs, "; "))
	}
	if strings.TrimSpace(sr.Spec.Address) == "" {
		problems = append(problems, "spec.address: required")
	}
	if len(problems) > 0 {
		return fmt.Errorf("ServiceRegistry %q: %s", sr.Name, strings.Join(problems, ", "))
	}
	return nil
}

// Resolve turns ServiceRegistries into plugin registrations, reading credentials from their
// Secrets with secrets (nil when there is no cluster: then a referenced Secret is an error).
// Registry names must be unique: they label everything Meltemi writes.
func Resolve(ctx context.Context, secrets kubernetes.Interface, srs []v1alpha1.ServiceRegistry) ([]supervisor.Registration, error) {
	var out []supervisor.Registration
	seen := map[string]string{}
	for _, sr := range srs {
		if prev, dup := seen[sr.Name]; dup {
			return nil, fmt.Errorf("ServiceRegistry name %q is used twice (namespaces %q and %q); names must be unique", sr.Name, prev, sr.Namespace)
		}
		seen[sr.Name] = sr.Namespace
		reg := supervisor.Registration{
			Name: sr.Name, Kind: sr.Spec.Kind, Address: sr.Spec.Address,
			Options: sr.Spec.Options, Checksum: sr.Spec.PluginSHA256, KeepLastNonEmpty: sr.Spec.KeepLastNonEmpty,
		}
		if ref := sr.Spec.CredentialsSecretRef; ref != nil {
			if secrets == nil {
				return nil, fmt.Errorf("ServiceRegistry %q references Secret %q but no cluster is configured", sr.Name, ref.Name)
			}
			s, err := secrets.CoreV1().Secrets(sr.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("ServiceRegistry %q: reading credentials Secret %s/%s: %w", sr.Name, sr.Namespace, ref.Name, err)
			}
			reg.Secrets = make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				reg.Secrets[k] = string(v)
			}
		}
		out = append(out, reg)
	}
	slices.SortFunc(out, func(a, b supervisor.Registration) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
