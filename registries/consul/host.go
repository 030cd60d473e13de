package consul

import "github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"

// defaultHostTemplate is the name Consul's own DNS interface gives a service.
const defaultHostTemplate = "{{.Service}}.service.consul"

// HostVars is what a host template sees.
type HostVars struct {
	// Service is the Consul service name as registered.
	Service string
	// Datacenter is the datacenter the service was read from.
	Datacenter string
}

// hostTemplate is the shared host template, typed so that it only ever sees HostVars.
type hostTemplate struct{ tmpl *hosttemplate.Template }

// parseHostTemplate parses the hostTemplate option. Unknown fields and templates that cannot
// give a DNS name fail now, not per service.
func parseHostTemplate(text string) (*hostTemplate, error) {
	t, err := hosttemplate.Parse(optHostTemplate, text, HostVars{Service: "web", Datacenter: "dc1"})
	if err != nil {
		return nil, err
	}
	return &hostTemplate{tmpl: t}, nil
}

// render executes the template and turns its output into a DNS name (hosttemplate.Sanitize).
func (h *hostTemplate) render(v HostVars) (string, error) { return h.tmpl.Render(v) }
