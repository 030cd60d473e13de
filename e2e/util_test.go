package e2e

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func yamlToObject(doc string, into *unstructured.Unstructured) error {
	into.Object = map[string]any{}
	return yaml.Unmarshal([]byte(doc), &into.Object)
}
