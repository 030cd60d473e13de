package dubbo

import "github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"

// DefaultHostTemplate names a service after its interface (interface level) or its
// application with the suffix .dubbo (application level). Application names rarely hold a dot,
// and Istio reads a host without one in a DestinationRule or VirtualService as a short name of
// the rule's namespace (<name>.<namespace>.svc.cluster.local): no rule could select such a
// ServiceEntry's endpoints.
const DefaultHostTemplate = "{{if .Interface}}{{.Interface}}{{else}}{{.Application}}.dubbo{{end}}"

// HostVars is what a host template sees. For an interface-level service Interface is set and
// Group, Version, Application and Protocol hold the value all of its providers share, or ""
// when they differ. For an application-level service Interface, Group and Version are empty and
// Protocol is the protocol all endpoints share, or "".
type HostVars struct {
	Interface   string
	Group       string
	Version     string
	Application string
	Protocol    string
}

// sampleVars is what a host template is checked with at configuration.
var sampleVars = HostVars{Interface: "org.example.Sample", Group: "g", Version: "1.0.0", Application: "sample", Protocol: "dubbo"}

// ParseHostTemplate parses a host template over HostVars; name is the option it came from.
func ParseHostTemplate(name, text string) (*hosttemplate.Template, error) {
	return hosttemplate.Parse(name, text, sampleVars)
}
