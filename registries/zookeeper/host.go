package zookeeper

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/meltemi-mesh/meltemi/bridge/model"
)

// defaultHostTemplate names a service after its interface (interface level) or its
// application (application level).
const defaultHostTemplate = "{{if .Interface}}{{.Interface}}{{else}}{{.Application}}{{end}}"

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

// hostTemplate renders and sanitises service host names.
type hostTemplate struct {
	tmpl *template.Template
}

// maxTemplateOutput bounds a rendered host before sanitising; a DNS name is at most 253.
const maxTemplateOutput = 1024

func parseHostTemplate(text string) (*hostTemplate, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("is empty")
	}
	t, err := template.New("hostTemplate").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	h := &hostTemplate{tmpl: t}
	// Catch references to fields that do not exist, and templates that cannot give a DNS name,
	// now rather than for every service later.
	sample := HostVars{Interface: "org.example.Sample", Group: "g", Version: "1.0.0", Application: "sample", Protocol: "dubbo"}
	if _, err := h.render(sample); err != nil {
		return nil, fmt.Errorf("gives no valid host for %+v: %w", sample, err)
	}
	return h, nil
}

// renderError is a host that rendered but is not a valid DNS name.
type renderError struct{ msg string }

func (e renderError) Error() string { return e.msg }

// render executes the template and sanitises its output into a DNS-1123 subdomain.
func (h *hostTemplate) render(v HostVars) (string, error) {
	var b limitedBuilder
	if err := h.tmpl.Execute(&b, v); err != nil {
		if b.full {
			return "", renderError{fmt.Sprintf("host template output is longer than %d bytes", maxTemplateOutput)}
		}
		return "", fmt.Errorf("executing host template: %w", err)
	}
	host, err := sanitizeHost(b.String())
	if err != nil {
		return "", renderError{err.Error()}
	}
	return host, nil
}

// sanitizeHost lower-cases s and turns it into a DNS-1123 subdomain: every character other
// than a-z, 0-9, '-' and '.' becomes '-', and hyphens at the start or end of a label are
// removed. Structure is never repaired: an empty label (as in "a..b" or ".svc"), a label over
// 63 characters or a name over 253 characters is an error.
func sanitizeHost(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, ".") // a fully qualified name's final dot
	if s == "" {
		return "", errors.New("host template gave an empty host")
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	labels := strings.Split(b.String(), ".")
	for i, l := range labels {
		l = strings.Trim(l, "-")
		switch {
		case l == "":
			return "", fmt.Errorf("host %s has an empty DNS label", quote(s, 80))
		case len(l) > 63:
			return "", fmt.Errorf("host %s has a DNS label longer than 63 characters", quote(s, 80))
		}
		labels[i] = l
	}
	host := strings.Join(labels, ".")
	if err := model.ValidateHost(host); err != nil {
		return "", fmt.Errorf("host %s: %v", quote(host, 80), err)
	}
	return host, nil
}

// limitedBuilder collects template output up to maxTemplateOutput bytes.
type limitedBuilder struct {
	strings.Builder
	full bool
}

func (b *limitedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxTemplateOutput {
		b.full = true
		return 0, errors.New("output too long")
	}
	return b.Builder.Write(p)
}
