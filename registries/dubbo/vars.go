package dubbo

import "github.com/meltemi-mesh/meltemi/plugins/catalog"

// InterfaceVars is what the host template sees for an interface-level service with these
// provider endpoints: Group, Version and Application from the labels ProviderInstance sets,
// and Protocol, each the value every endpoint shares or "" when they differ.
func InterfaceVars(iface string, insts []catalog.Instance) HostVars {
	return HostVars{
		Interface:   iface,
		Group:       Shared(insts, func(i catalog.Instance) string { return i.Labels["group"] }),
		Version:     Shared(insts, func(i catalog.Instance) string { return i.Labels["version"] }),
		Application: Shared(insts, func(i catalog.Instance) string { return i.Labels["application"] }),
		Protocol:    Shared(insts, func(i catalog.Instance) string { return i.Protocol }),
	}
}

// Shared returns the value f gives for every instance, or "" when they differ (or there are
// none).
func Shared(insts []catalog.Instance, f func(catalog.Instance) string) string {
	if len(insts) == 0 {
		return ""
	}
	v := f(insts[0])
	for _, in := range insts[1:] {
		if f(in) != v {
			return ""
		}
	}
	return v
}
