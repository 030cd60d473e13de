package nacos

import (
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
	"github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"
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
	service, dubbo *hosttemplate.Template
}

func (h *hostTemplates) serviceHost(v ServiceVars) (string, error) { return h.service.Render(v) }
func (h *hostTemplates) dubboHost(v DubboVars) (string, error)     { return h.dubbo.Render(v) }

// templateError is a problem with one of the host template options.
type templateError struct {
	field string
	err   error
}

func (e templateError) Error() string { return e.err.Error() }

func newHostTemplates(service, dubboTemplate string) (*hostTemplates, error) {
	var h hostTemplates
	var err error
	if h.service, err = hosttemplate.Parse(optHostTemplate, service, ServiceVars{Service: "orders", Group: "g", Namespace: "ns"}); err != nil {
		return nil, templateError{optHostTemplate, err}
	}
	if h.dubbo, err = dubbo.ParseHostTemplate(optDubboHostTemplate, dubboTemplate); err != nil {
		return nil, templateError{optDubboHostTemplate, err}
	}
	return &h, nil
}
