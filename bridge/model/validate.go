package model

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Rejection says why one item a registry reported was not used.
type Rejection struct {
	Registry string
	// Item identifies what was rejected: a service key, or "<key>/<address>:<port>".
	Item   string
	Reason string
}

func (r Rejection) Error() string { return fmt.Sprintf("%s: %s: %s", r.Registry, r.Item, r.Reason) }

// Limits that objects written to the mesh must respect.
const (
	maxHostLength  = 253
	maxLabels      = 64
	maxLocalityLen = 253
)

// Validate returns the service with every invalid instance removed and invalid labels dropped,
// plus one rejection per removed item. ok is false when the service as a whole is unusable
// (bad key or host); then nothing of it may be used.
func Validate(s Service) (valid Service, rejections []Rejection, ok bool) {
	reject := func(item, format string, args ...any) {
		rejections = append(rejections, Rejection{Registry: s.Registry, Item: item, Reason: fmt.Sprintf(format, args...)})
	}
	if s.Key == "" {
		reject("<empty key>", "service key is empty")
		return Service{}, rejections, false
	}
	if err := ValidateHost(s.Host); err != nil {
		reject(s.Key, "host %q: %v", truncate(s.Host, 80), err)
		return Service{}, rejections, false
	}
	valid = Service{Registry: s.Registry, Key: s.Key, Host: s.Host, Instances: make([]Instance, 0, len(s.Instances))}
	valid.Labels, _ = FilterLabels(s.Labels)
	for _, in := range s.Instances {
		item := fmt.Sprintf("%s/%s:%d", s.Key, truncate(in.Address, 64), in.Port)
		if err := validateInstance(in); err != nil {
			reject(item, "%v", err)
			continue
		}
		labels, dropped := FilterLabels(in.Labels)
		in.Labels = labels
		_ = dropped // invalid metadata is not worth a rejection: the endpoint itself is fine
		valid.Instances = append(valid.Instances, in)
	}
	valid.Normalize()
	return valid, rejections, true
}

// ValidateHost checks that host can be a ServiceEntry host: a lower-case DNS-1123 subdomain.
func ValidateHost(host string) error {
	if host == "" {
		return fmt.Errorf("empty")
	}
	if len(host) > maxHostLength {
		return fmt.Errorf("longer than %d characters", maxHostLength)
	}
	if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
		return fmt.Errorf("not a DNS name: %s", strings.Join(errs, "; "))
	}
	return nil
}

func validateInstance(in Instance) error {
	addr, err := netip.ParseAddr(in.Address)
	if err != nil {
		return fmt.Errorf("address %q is not an IP address", truncate(in.Address, 64))
	}
	if addr.IsUnspecified() || addr.IsMulticast() {
		return fmt.Errorf("address %s cannot be an endpoint", addr)
	}
	if addr.Zone() != "" {
		return fmt.Errorf("address %s has a zone", addr)
	}
	if in.Port == 0 || in.Port > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", in.Port)
	}
	if in.Protocol != "" && !isProtocolToken(in.Protocol) {
		return fmt.Errorf("protocol %q is not a lower-case token", truncate(in.Protocol, 32))
	}
	if len(in.Locality) > maxLocalityLen {
		return fmt.Errorf("locality longer than %d characters", maxLocalityLen)
	}
	if len(in.Labels) > 4*maxLabels {
		return fmt.Errorf("%d labels, more than %d", len(in.Labels), 4*maxLabels)
	}
	return nil
}

func isProtocolToken(p string) bool {
	if len(p) > 32 {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// FilterLabels keeps the labels that are valid Kubernetes label keys and values, up to a
// bounded number, and returns the keys it dropped. Registry metadata is free-form; only what a
// label can carry is kept.
func FilterLabels(in map[string]string) (kept map[string]string, dropped []string) {
	if len(in) == 0 {
		return nil, nil
	}
	kept = make(map[string]string, len(in))
	for k, v := range in {
		if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			dropped = append(dropped, k)
			continue
		}
		kept[k] = v
	}
	if len(kept) > maxLabels {
		// Keep a deterministic subset so output does not flap between runs.
		keys := sortedKeys(kept)
		for _, k := range keys[maxLabels:] {
			delete(kept, k)
			dropped = append(dropped, k)
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	return kept, dropped
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
