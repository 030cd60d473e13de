package nacos

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/meltemi-mesh/meltemi/bridge/model"
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

// DubboVars is what the Dubbo host template sees, with the ZooKeeper plugin's meaning:
// Interface is set; Group, Version, Application and Protocol hold the value every provider
// shares, or "" when they differ.
type DubboVars struct {
	Interface   string
	Group       string
	Version     string
	Application string
	Protocol    string
}

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
	return dnsName(b.String())
}

func (h *hostTemplates) serviceHost(v ServiceVars) (string, error) { return renderHost(h.service, v) }
func (h *hostTemplates) dubboHost(v DubboVars) (string, error)     { return renderHost(h.dubbo, v) }

// dnsName lower-cases s and makes it a DNS-1123 subdomain: characters other than a-z, 0-9,
// '-' and '.' become '-', and hyphens at the ends of a label are dropped. An empty label, a
// label over 63 or a name over 253 characters is an error rather than repaired, since a
// repair could give two services the same host. Dubbo interfaces get exactly the ZooKeeper
// plugin's result.
func dnsName(s string) (string, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" {
		return "", errors.New("host template gave an empty host")
	}
	mapped := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
	labels := strings.Split(mapped, ".")
	for i := range labels {
		labels[i] = strings.Trim(labels[i], "-")
		if labels[i] == "" || len(labels[i]) > 63 {
			return "", fmt.Errorf("host %s has an empty DNS label or one longer than 63 characters", quote(s, 80))
		}
	}
	host := strings.Join(labels, ".")
	if err := model.ValidateHost(host); err != nil {
		return "", fmt.Errorf("host %s: %v", quote(host, 80), err)
	}
	return host, nil
}

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
