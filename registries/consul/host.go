package consul

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/meltemi-mesh/meltemi/bridge/model"
)

// defaultHostTemplate is the name Consul's own DNS interface gives a service.
const defaultHostTemplate = "{{.Service}}.service.consul"

// HostVars is what a host template sees.
type HostVars struct {
	// Service is the Consul service name as registered.
	Service string
	// Datacenter is the datacenter the service was read from.
	Datacenter string
}

type hostTemplate struct{ tmpl *template.Template }

// maxTemplateOutput bounds a rendered host before it is checked; a DNS name is at most 253.
const maxTemplateOutput = 1024

func parseHostTemplate(text string) (*hostTemplate, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("is empty")
	}
	t, err := template.New(optHostTemplate).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	h := &hostTemplate{tmpl: t}
	// Unknown fields and templates that cannot give a DNS name fail now, not per service.
	sample := HostVars{Service: "web", Datacenter: "dc1"}
	if _, err := h.render(sample); err != nil {
		return nil, fmt.Errorf("gives no valid host for %+v: %w", sample, err)
	}
	return h, nil
}

// render executes the template and turns its output into a DNS name: lower case, every
// character other than a-z, 0-9, '-' and '.' replaced by '-', hyphens trimmed from the ends
// of labels. Empty labels and over-long names are errors, never repaired.
func (h *hostTemplate) render(v HostVars) (string, error) {
	var b cappedWriter
	if err := h.tmpl.Execute(&b, v); err != nil {
		if b.full {
			return "", fmt.Errorf("host template output is longer than %d bytes", maxTemplateOutput)
		}
		return "", fmt.Errorf("executing host template: %w", err)
	}
	raw := strings.TrimSuffix(strings.TrimSpace(b.String()), ".")
	mapped := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(raw))
	labels := strings.Split(mapped, ".")
	for i, l := range labels {
		switch labels[i] = strings.Trim(l, "-"); {
		case labels[i] == "":
			return "", fmt.Errorf("host %q has an empty DNS label", clip(raw, 80))
		case len(labels[i]) > 63:
			return "", fmt.Errorf("host %q has a DNS label longer than 63 characters", clip(raw, 80))
		}
	}
	host := strings.Join(labels, ".")
	if err := model.ValidateHost(host); err != nil {
		return "", fmt.Errorf("host %q: %v", clip(host, 80), err)
	}
	return host, nil
}

// cappedWriter collects template output up to maxTemplateOutput bytes.
type cappedWriter struct {
	strings.Builder
	full bool
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > maxTemplateOutput {
		w.full = true
		return 0, errors.New("output too long")
	}
	return w.Builder.Write(p)
}

// clip shortens s for messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
