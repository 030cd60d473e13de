package nacos

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/meltemi-mesh/meltemi/registries/dubbo"
	"github.com/meltemi-mesh/meltemi/registries/internal/regutil"
)

// defaultHostTemplate names a service <service>.<group>.<namespace>.nacos, leaving out the
// default group and the public namespace.
const defaultHostTemplate = `{{.Service}}{{if ne .Group "DEFAULT_GROUP"}}.{{.Group}}{{end}}{{if ne .Namespace "public"}}.{{.Namespace}}{{end}}.nacos`

// defaultDubboHostTemplate names a Dubbo interface as the ZooKeeper plugin does.
const defaultDubboHostTemplate = "{{.Interface}}"

// ServiceVars is what the host template of a plain Nacos service sees.
type ServiceVars struct {
	Service   string
	Group     string
	Namespace string // the namespace ID; "public" for the default namespace
}

// DubboVars is what the Dubbo host template sees: the ZooKeeper plugin's variables, so that
// one Dubbo interface gets the same host from both registries.
type DubboVars = dubbo.HostVars

// hostTemplates render service hosts.
type hostTemplates struct {
	service, dubbo *template.Template
}

// maxHostOutput bounds a rendered host before sanitising; a DNS name has at most 253.
const maxHostOutput = 1024

// parseHostTemplate parses a template and checks that it gives a valid host for sample, so
// that unknown fields and templates that cannot give DNS names fail at configuration.
func parseHostTemplate(name, text string, sample any) (*template.Template, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("is empty")
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	if _, err := renderHost(t, sample); err != nil {
		return nil, fmt.Errorf("gives no valid host for %+v: %w", sample, err)
	}
	return t, nil
}

// renderHost executes t and sanitises the result into a DNS name.
func renderHost(t *template.Template, vars any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, vars); err != nil {
		return "", fmt.Errorf("executing host template: %w", err)
	}
	if b.Len() > maxHostOutput {
		return "", fmt.Errorf("host template output is longer than %d bytes", maxHostOutput)
	}
	return regutil.SanitizeHost(b.String())
}

func (h *hostTemplates) serviceHost(v ServiceVars) (string, error) { return renderHost(h.service, v) }
func (h *hostTemplates) dubboHost(v DubboVars) (string, error)     { return renderHost(h.dubbo, v) }

// templateError is a problem with one of the host template options.
type templateError struct {
	field string
	err   error
}

func (e templateError) Error() string { return e.err.Error() }

func newHostTemplates(service, dubbo string) (*hostTemplates, error) {
	var h hostTemplates
	var err error
	if h.service, err = parseHostTemplate(optHostTemplate, service, ServiceVars{Service: "orders", Group: "g", Namespace: "ns"}); err != nil {
		return nil, templateError{optHostTemplate, err}
	}
	sample := DubboVars{Interface: "org.example.Sample", Group: "g", Version: "1.0.0", Application: "sample", Protocol: "dubbo"}
	if h.dubbo, err = parseHostTemplate(optDubboHostTemplate, dubbo, sample); err != nil {
		return nil, templateError{optDubboHostTemplate, err}
	}
	return &h, nil
}
