// Package crdcheck_test ties the chart's CRD schemas to the Go types that read and write those
// objects: the schemas are written by hand (Aeraki's CRDs keep Aeraki's exact shapes), so this
// test fails when a schema property has no Go field, or a Go field no schema property.
package crdcheck_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	dubbov1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	mpv1 "github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
)

// schema is the part of a structural schema this check reads.
type schema struct {
	Type                  string             `json:"type"`
	Properties            map[string]*schema `json:"properties"`
	Items                 *schema            `json:"items"`
	AdditionalProperties  *schema            `json:"additionalProperties"`
	PreserveUnknownFields bool               `json:"x-kubernetes-preserve-unknown-fields"`
	IntOrString           bool               `json:"x-kubernetes-int-or-string"`
	EmbeddedResource      bool               `json:"x-kubernetes-embedded-resource"`
	AnyOf, OneOf, AllOf   []json.RawMessage
}

type crd struct {
	Spec struct {
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema *schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

var goTypes = map[string]reflect.Type{
	"ServiceRegistry":          reflect.TypeFor[v1alpha1.ServiceRegistry](),
	"MetaRouter":               reflect.TypeFor[mpv1.MetaRouter](),
	"ApplicationProtocol":      reflect.TypeFor[mpv1.ApplicationProtocol](),
	"DubboAuthorizationPolicy": reflect.TypeFor[dubbov1.DubboAuthorizationPolicy](),
	"RedisService":             reflect.TypeFor[redisv1.RedisService](),
	"RedisDestination":         reflect.TypeFor[redisv1.RedisDestination](),
}

// leaf types are read as a whole (they carry their own JSON form).
var leaves = []reflect.Type{reflect.TypeFor[metav1.Time](), reflect.TypeFor[metav1.Duration]()}

func TestCRDSchemasMatchGoTypes(t *testing.T) {
	files, err := filepath.Glob("../../charts/meltemi/crds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs found: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c crd
		if err := yaml.Unmarshal(data, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		kind := c.Spec.Names.Kind
		typ, ok := goTypes[kind]
		if !ok {
			t.Errorf("%s: kind %s has no Go type in this test", filepath.Base(f), kind)
			continue
		}
		seen[kind] = true
		for _, v := range c.Spec.Versions {
			s := v.Schema.OpenAPIV3Schema
			if s == nil {
				t.Errorf("%s %s: no schema", kind, v.Name)
				continue
			}
			for _, field := range []string{"spec", "status"} {
				prop, hasProp := s.Properties[field]
				sf, hasField := jsonFields(typ)[field]
				switch {
				case hasProp && hasField:
					for _, d := range compare(kind+"."+field, prop, sf) {
						t.Error(d)
					}
				case hasProp && prop.PreserveUnknownFields:
					// Aeraki's free-form status, which Meltemi neither reads nor writes.
				case hasProp != hasField:
					t.Errorf("%s: %s in the schema %v, in the Go type %v", kind, field, hasProp, hasField)
				}
			}
		}
	}
	for kind := range goTypes {
		if !seen[kind] {
			t.Errorf("no CRD for %s under charts/meltemi/crds", kind)
		}
	}
}

// jsonFields returns a struct type's fields by JSON name, inline embedded structs flattened.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			for k, v := range jsonFields(deref(f.Type)) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// compare walks a schema and a Go type together and returns every disagreement.
func compare(path string, s *schema, t reflect.Type) []string {
	t = deref(t)
	if s.PreserveUnknownFields || s.IntOrString || slices.Contains(leaves, t) {
		return nil
	}
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil // a type with a JSON form of its own
	}
	switch t.Kind() {
	case reflect.Struct:
		if s.Type != "object" {
			return []string{fmt.Sprintf("%s: schema type %q, Go type %s is a struct", path, s.Type, t)}
		}
		var out []string
		fields := jsonFields(t)
		for name, prop := range s.Properties {
			ft, ok := fields[name]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: in the schema, not in Go type %s", path, name, t))
				continue
			}
			out = append(out, compare(path+"."+name, prop, ft)...)
		}
		for name := range fields {
			if _, ok := s.Properties[name]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: in Go type %s, not in the schema", path, name, t))
			}
		}
		return out
	case reflect.Map:
		if s.Type != "object" || s.AdditionalProperties == nil {
			return []string{fmt.Sprintf("%s: Go map %s, schema without additionalProperties", path, t)}
		}
		return compare(path+"[*]", s.AdditionalProperties, t.Elem())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return want(path, s, "string", t)
		}
		if s.Type != "array" || s.Items == nil {
			return []string{fmt.Sprintf("%s: Go slice %s, schema type %q", path, t, s.Type)}
		}
		return compare(path+"[]", s.Items, t.Elem())
	case reflect.String:
		return want(path, s, "string", t)
	case reflect.Bool:
		return want(path, s, "boolean", t)
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Uint16, reflect.Uint8:
		return want(path, s, "integer", t)
	case reflect.Float32, reflect.Float64:
		if s.Type == "number" || s.Type == "integer" {
			return nil
		}
		return []string{fmt.Sprintf("%s: Go %s, schema type %q", path, t, s.Type)}
	case reflect.Interface:
		return nil
	}
	return []string{fmt.Sprintf("%s: Go kind %s not understood by this check", path, t.Kind())}
}

func want(path string, s *schema, typ string, t reflect.Type) []string {
	if s.Type == typ {
		return nil
	}
	return []string{fmt.Sprintf("%s: Go %s, schema type %q (want %q)", path, t, s.Type, typ)}
}

// TestCompareFindsDisagreements: the check itself sees a missing field on either side and a
// wrong type.
func TestCompareFindsDisagreements(t *testing.T) {
	type inner struct {
		Port int32 `json:"port"`
	}
	type spec struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
		Ports  []inner           `json:"ports,omitempty"`
		Extra  bool              `json:"extra,omitempty"`
	}
	var s schema
	if err := yaml.Unmarshal([]byte(`
type: object
properties:
  name: {type: integer}
  labels: {type: object, additionalProperties: {type: string}}
  ports: {type: array, items: {type: object, properties: {port: {type: integer}, protocol: {type: string}}}}
`), &s); err != nil {
		t.Fatal(err)
	}
	got := compare("x", &s, reflect.TypeFor[spec]())
	slices.Sort(got)
	want := []string{
		`x.extra: in Go type crdcheck_test.spec, not in the schema`,
		`x.name: Go string, schema type "integer" (want "string")`,
		`x.ports[].protocol: in the schema, not in Go type crdcheck_test.inner`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("compare found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
