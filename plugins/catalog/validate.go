package catalog

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
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
// plus one rejection per removed instance. ok is false when the service as a whole is unusable
// (bad key or host); then nothing of it may be used. Label maps that need no change are
// shared with s, not copied: s's owner must not modify them afterwards.
func Validate(s Service) (valid Service, rejections []Rejection, ok bool) {
	return validate(s, false)
}

// ValidateAll is Validate that also rejects each label it drops, saying why: for the host,
// which reports everything of a registry it does not use. Labels of an unusable service are
// not reported.
func ValidateAll(s Service) (valid Service, rejections []Rejection, ok bool) {
	return validate(s, true)
}

func validate(s Service, reportLabels bool) (valid Service, rejections []Rejection, ok bool) {
	reject := func(item, format string, args ...any) {
		rejections = append(rejections, Rejection{Registry: s.Registry, Item: item, Reason: fmt.Sprintf(format, args...)})
	}
	if s.Key == "" {
		reject("<empty key>", "service key is empty")
		return Service{}, rejections, false
	}
	if err := ValidateHost(s.Host); err != nil {
		reject(Clip(s.Key, 256), "host %q: %v", Clip(s.Host, 80), err)
		return Service{}, rejections, false
	}
	// Items are formatted only when something is rejected: formatting one for every valid
	// instance would cost more than validating it.
	filter := func(labels map[string]string, item func() string) map[string]string {
		kept, dropped := FilterLabels(labels)
		if reportLabels && len(dropped) > 0 {
			name := item()
			slices.Sort(dropped)
			for _, k := range dropped {
				reject(name+" label "+Clip(k, 80), "%s; label dropped", labelProblem(k, labels[k]))
			}
		}
		return kept
	}
	valid = Service{Registry: s.Registry, Key: s.Key, Host: s.Host, Instances: make([]Instance, 0, len(s.Instances))}
	valid.Labels = filter(s.Labels, func() string { return Clip(s.Key, 256) })
	for _, in := range s.Instances {
		item := func() string { return fmt.Sprintf("%s/%s:%d", Clip(s.Key, 256), Clip(in.Address, 64), in.Port) }
		if err := validateInstance(in); err != nil {
			reject(item(), "%v", err)
			continue
		}
		// Invalid metadata costs a label, not the endpoint.
		in.Labels = filter(in.Labels, item)
		valid.Instances = append(valid.Instances, in)
	}
	valid.Normalize()
	return valid, rejections, true
}

// labelProblem says why k=v cannot be a label; a valid one was dropped for the bound on their
// number.
func labelProblem(k, v string) string {
	var reasons []string
	if !IsLabelKey(k) {
		reasons = append(reasons, "key: "+keyProblem(k))
	}
	if !IsLabelValue(v) {
		reasons = append(reasons, fmt.Sprintf("value of %d bytes: %s", len(v), nameProblem(v)))
	}
	if len(reasons) == 0 {
		return fmt.Sprintf("more than %d labels", maxLabels)
	}
	return strings.Join(reasons, "; ")
}

// ValidateHost checks that host can be a ServiceEntry host: a lower-case DNS-1123 subdomain.
func ValidateHost(host string) error {
	if host == "" {
		return fmt.Errorf("empty")
	}
	if len(host) > maxHostLength {
		return fmt.Errorf("longer than %d characters", maxHostLength)
	}
	if isDNSSubdomain(host) {
		return nil
	}
	return fmt.Errorf("not a DNS name: %s", subdomainProblem(host))
}

func validateInstance(in Instance) error {
	addr, err := netip.ParseAddr(in.Address)
	if err != nil {
		return fmt.Errorf("address %q is not an IP address", Clip(in.Address, 64))
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
	if in.Protocol != "" && !IsProtocol(in.Protocol) {
		return fmt.Errorf("protocol %q is not a lower-case token", Clip(in.Protocol, 32))
	}
	if len(in.Locality) > maxLocalityLen {
		return fmt.Errorf("locality longer than %d characters", maxLocalityLen)
	}
	if len(in.Labels) > 4*maxLabels {
		return fmt.Errorf("%d labels, more than %d", len(in.Labels), 4*maxLabels)
	}
	return nil
}

// IsProtocol reports whether p can be an instance's protocol: 1 to 32 lower-case letters,
// digits, '-' and '_'.
func IsProtocol(p string) bool {
	if p == "" || len(p) > 32 {
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
// label can carry is kept. When nothing is dropped, kept is in itself, not a copy (this runs
// for every instance the host receives, and nearly all label sets are fine).
func FilterLabels(in map[string]string) (kept map[string]string, dropped []string) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) <= maxLabels && allLabelsValid(in) {
		return in, nil
	}
	kept = make(map[string]string, len(in))
	for k, v := range in {
		if !IsLabelKey(k) || !IsLabelValue(v) {
			dropped = append(dropped, k)
			continue
		}
		kept[k] = v
	}
	if len(kept) > maxLabels {
		// Keep a deterministic subset so output does not flap between runs.
		keys := slices.Sorted(maps.Keys(kept))
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

func allLabelsValid(labels map[string]string) bool {
	for k, v := range labels {
		if !IsLabelKey(k) || !IsLabelValue(v) {
			return false
		}
	}
	return true
}
