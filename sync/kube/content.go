package kube

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
)

// DefaultMaxObjectBytes is the largest JSON encoding of an object the reconciler writes: etcd's
// default request limit (1.5 MiB). Larger objects are refused; the caller splits them (for
// ServiceEntries: endpoints moved into WorkloadEntries).
const DefaultMaxObjectBytes = 1536 * 1024

// ErrTooLarge is returned (wrapped) by Set for an object whose JSON exceeds the size limit.
var ErrTooLarge = errors.New("object too large")

// nonContent reports the top-level fields that are not part of an object's content.
func nonContent(field string) bool {
	switch field {
	case "apiVersion", "kind", "metadata", "status":
		return true
	}
	return false
}

// desiredObject is a normalised desired object ready to be applied. It keeps the object as
// its JSON apply body, not as a decoded map: a map of nested maps costs several times the
// bytes, and every desired object of the mesh is held for as long as it is desired. The content
// is decoded again only when it must be compared with the cluster's copy (see inSync).
type desiredObject struct {
	apiVersion, kind, namespace, name string
	labels, annotations               map[string]string // as applied, the content hash included
	hash                              string
	contentHash                       string // of the content alone (see contentDigest)
	size                              int    // bytes of the JSON apply body (without resourceVersion)
	body                              []byte // that body; nil for an object refused as too large
}

// Desired returns obj as a reconciler with ownerLabels would apply it (see normalize): what
// a preview such as meltemi convert shows.
func Desired(obj *unstructured.Unstructured, ownerLabels map[string]string) (*unstructured.Unstructured, error) {
	u, _, err := normalizeObject(obj, ownerLabels)
	if err != nil {
		return nil, err
	}
	if _, err := encodeDesired(u, DefaultMaxObjectBytes); err != nil {
		return nil, err
	}
	return u, nil
}

// normalize turns a caller's object into the desired object to apply:
//   - values are deep-copied into the
//     int64/float64/map[string]any forms that objects decoded from the API server have;
//   - metadata is reduced to name, namespace, labels and annotations (server-populated fields
//     such as resourceVersion, uid or managedFields and any status are dropped);
//   - the ownership labels are added (overriding a caller's value for them);
//   - the content hash annotation is computed and set.
func normalize(in *unstructured.Unstructured, ownerLabels map[string]string, maxBytes int) (*desiredObject, error) {
	u, _, err := normalizeObject(in, ownerLabels)
	if err != nil {
		return nil, err
	}
	return encodeDesired(u, maxBytes)
}

// normalizeObject is normalize before encoding; it also returns the content hash.
func normalizeObject(in *unstructured.Unstructured, ownerLabels map[string]string) (*unstructured.Unstructured, string, error) {
	v, ok := jsonValue(in.Object)
	m, _ := v.(map[string]any)
	if !ok {
		// Values of types a JSON decode never produces (structs, typed slices and maps):
		// round-trip through JSON.
		raw, err := json.Marshal(in.Object)
		if err != nil {
			return nil, "", fmt.Errorf("encoding %s: %w", describe(in), err)
		}
		if err := utiljson.Unmarshal(raw, &m); err != nil {
			return nil, "", fmt.Errorf("decoding %s: %w", describe(in), err)
		}
	}
	u := &unstructured.Unstructured{Object: make(map[string]any, len(m))}
	for k, v := range m {
		if k == "metadata" || k == "status" {
			continue
		}
		u.Object[k] = v
	}
	u.SetName(in.GetName())
	u.SetNamespace(in.GetNamespace())

	labels := in.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels = maps.Clone(labels)
	labels[v1alpha1.LabelManagedBy] = v1alpha1.ManagedByValue
	maps.Copy(labels, ownerLabels)
	u.SetLabels(labels)

	annotations := maps.Clone(in.GetAnnotations())
	delete(annotations, v1alpha1.AnnotationContentHash)
	if len(annotations) > 0 {
		u.SetAnnotations(annotations)
	}

	hash := ContentHash(u)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[v1alpha1.AnnotationContentHash] = hash
	u.SetAnnotations(annotations)
	return u, hash, nil
}

// encodeDesired encodes a normalised object; the returned object is kept, u is not.
func encodeDesired(u *unstructured.Unstructured, maxBytes int) (*desiredObject, error) {
	body, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", describe(u), err)
	}
	d := &desiredObject{
		apiVersion: u.GetAPIVersion(), kind: u.GetKind(), namespace: u.GetNamespace(), name: u.GetName(),
		labels: u.GetLabels(), annotations: u.GetAnnotations(),
		hash: u.GetAnnotations()[v1alpha1.AnnotationContentHash], contentHash: contentDigest(u.Object),
		size: len(body), body: body,
	}
	if maxBytes > 0 && len(body) > maxBytes {
		d.body = nil
		return d, fmt.Errorf(
			"%w: %s encodes to %d bytes, over the limit of %d bytes (etcd's request limit); split it (e.g. move endpoints into WorkloadEntries)",
			ErrTooLarge, describe(u), len(body), maxBytes)
	}
	return d, nil
}

// ref is the object for Events about d: its identity, no content.
func (d *desiredObject) ref() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(d.apiVersion)
	u.SetKind(d.kind)
	u.SetNamespace(d.namespace)
	u.SetName(d.name)
	return u
}

// content decodes the desired content: the top-level fields ContentHash covers.
func (d *desiredObject) content() (map[string]any, error) {
	var m map[string]any
	if err := utiljson.Unmarshal(d.body, &m); err != nil {
		return nil, fmt.Errorf("decoding the desired %s %s/%s: %w", d.kind, d.namespace, d.name, err)
	}
	for k := range m {
		if nonContent(k) {
			delete(m, k)
		}
	}
	return m, nil
}

// jsonValue deep-copies v into the types a JSON decode yields (map[string]any, []any, string,
// bool, int64, float64, nil), so that desired objects compare and hash like objects read from
// the API server. It reports false for a value of any other type; the caller then falls back
// to a JSON round trip.
func jsonValue(v any) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, ok := jsonValue(e)
			if !ok {
				return nil, false
			}
			out[k] = c
		}
		return out, true
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, ok := jsonValue(e)
			if !ok {
				return nil, false
			}
			out[i] = c
		}
		return out, true
	case map[string]string:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = e
		}
		return out, true
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out, true
	case string, bool, int64, nil:
		return x, true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true // as k8s.io/apimachinery/pkg/util/json decodes whole numbers
		}
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint8:
		return int64(x), true
	}
	return nil, false
}

// ContentHash is the hex SHA-256 of the canonical JSON of an object's labels, its annotations
// except v1alpha1.AnnotationContentHash, and its content (every top-level field except apiVersion, kind,
// metadata and status). encoding/json writes map keys sorted, so equal content gives equal
// bytes; callers pass objects whose numbers are int64/float64 as decoded from JSON.
func ContentHash(u *unstructured.Unstructured) string {
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	annotations := maps.Clone(u.GetAnnotations())
	if annotations == nil {
		annotations = map[string]string{}
	}
	delete(annotations, v1alpha1.AnnotationContentHash)
	content := make(map[string]any, len(u.Object))
	for k, v := range u.Object {
		if !nonContent(k) {
			content[k] = v
		}
	}
	b, err := json.Marshal(map[string]any{"labels": labels, "annotations": annotations, "content": content})
	if err != nil {
		// Only values that cannot come out of a JSON decode fail to encode.
		panic(fmt.Sprintf("content hash of %s: %v", describe(u), err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// applyBody is the server-side apply request body; a non-empty resourceVersion makes the apply
// conditional on the object still being at that version.
func (d *desiredObject) applyBody(resourceVersion string) ([]byte, error) {
	if d.body == nil {
		return nil, fmt.Errorf("%s %s/%s has no apply body", d.kind, d.namespace, d.name)
	}
	if resourceVersion == "" {
		return d.body, nil
	}
	// The body is encoding/json's, keys sorted: metadata is an object whose first key the
	// version can precede.
	const md = `"metadata":{`
	i := bytes.Index(d.body, []byte(md))
	if i < 0 {
		return nil, fmt.Errorf("%s %s/%s: apply body without metadata", d.kind, d.namespace, d.name)
	}
	rv, err := json.Marshal(resourceVersion)
	if err != nil {
		return nil, err
	}
	i += len(md)
	out := make([]byte, 0, len(d.body)+len(rv)+20)
	out = append(out, d.body[:i]...)
	out = append(out, `"resourceVersion":`...)
	out = append(out, rv...)
	out = append(out, ',')
	return append(out, d.body[i:]...), nil
}

// liveDigestKey holds, in an owned object of the informer cache, the digest of the object's
// content (contentDigest) in place of the content: every owned object is cached, and its
// content is only ever compared with a desired one. The key is no field name the API server
// can send, and a string keeps the object a valid JSON value.
const liveDigestKey = "\x00contentDigest"

// compactLive is an owned object as the informer cache keeps it: apiVersion, kind, metadata
// without managedFields, and the digest of its content (see liveDigestKey); status and the
// content itself are dropped.
func compactLive(u *unstructured.Unstructured) *unstructured.Unstructured {
	out := &unstructured.Unstructured{Object: make(map[string]any, 4)}
	for _, k := range []string{"apiVersion", "kind", "metadata"} {
		if v, ok := u.Object[k]; ok {
			out.Object[k] = v
		}
	}
	out.SetManagedFields(nil)
	out.Object[liveDigestKey] = contentDigest(u.Object)
	return out
}

// contentDigest is the hex SHA-256 of the canonical JSON of an object's content: its top-level
// fields except apiVersion, kind, metadata and status (numbers as a JSON decode yields them).
func contentDigest(obj map[string]any) string {
	content := make(map[string]any, len(obj))
	for k, v := range obj {
		if !nonContent(k) {
			content[k] = v
		}
	}
	b, err := json.Marshal(content)
	if err != nil {
		// Only values that cannot come out of a JSON decode fail to encode.
		panic(fmt.Sprintf("content digest: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// syncState is what a comparison of a desired object with a live one can tell.
type syncState int

const (
	drifted   syncState = iota // the live object differs: apply
	inSyncNow                  // it carries the desired state: nothing to do
	undecided                  // the cache cannot tell: compare the whole object (inSync)
)

// compareCached compares a desired object with the informer cache's copy (compactLive). Hash
// annotation, labels and annotations decide drift as in inSync. The content is in sync when it
// is byte for byte the desired one; when it is not (or the object carries no digest), only the
// whole object can tell whether the difference is drift or what the server added (defaults),
// so the answer is undecided.
func compareCached(d *desiredObject, live *unstructured.Unstructured) syncState {
	if !metadataInSync(d, live) {
		return drifted
	}
	if digest, _ := live.Object[liveDigestKey].(string); digest == d.contentHash {
		return inSyncNow
	}
	return undecided
}

// metadataInSync reports whether a live object has the desired content hash annotation and
// every desired label and annotation with its value (extra ones are allowed).
func metadataInSync(d *desiredObject, live *unstructured.Unstructured) bool {
	liveAnn := live.GetAnnotations()
	if liveAnn[v1alpha1.AnnotationContentHash] != d.hash {
		return false
	}
	for k, v := range d.annotations {
		if lv, ok := liveAnn[k]; !ok || lv != v {
			return false
		}
	}
	liveLabels := live.GetLabels()
	for k, v := range d.labels {
		if lv, ok := liveLabels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// inSync reports whether a whole live owned object (as the API server returns it) already
// carries the desired state: metadataInSync, and the desired content contained in the live
// content (see contains). Fields the server defaults are tolerated; a changed value, a removed
// field or a list of another length is drift. The desired content is decoded only once the
// metadata matches; if it cannot be, that is drift.
func inSync(d *desiredObject, live *unstructured.Unstructured) bool {
	if !metadataInSync(d, live) {
		return false
	}
	want, err := d.content()
	if err != nil {
		return false
	}
	for k, v := range want {
		lv, ok := live.Object[k]
		if !ok {
			if isEmpty(v) {
				continue
			}
			return false
		}
		if !contains(v, lv) {
			return false
		}
	}
	return true
}

// contains reports whether got holds want: maps hold every key of want (extra keys, such as
// server defaults, are allowed), lists have the same length and hold want's items in order,
// scalars are equal (numbers compared by value).
func contains(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return got == nil && len(w) == 0
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				if isEmpty(wv) {
					continue
				}
				return false
			}
			if !contains(wv, gv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok {
			return got == nil && len(w) == 0
		}
		if len(g) != len(w) {
			return false
		}
		for i := range w {
			if !contains(w[i], g[i]) {
				return false
			}
		}
		return true
	case nil:
		return got == nil
	case string, bool:
		return want == got
	case int64:
		if g, ok := got.(int64); ok {
			return w == g
		}
		gf, ok := number(got)
		return ok && float64(w) == gf
	default:
		wf, wok := number(want)
		gf, gok := number(got)
		if wok && gok {
			return wf == gf
		}
		return want == got
	}
}

// isEmpty reports values that the API server may drop without changing meaning.
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int32:
		return float64(x), true
	}
	return 0, false
}

func describe(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
	}
	return fmt.Sprintf("%s %s", u.GetKind(), u.GetName())
}
