package zookeeper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// AppInstance is a Dubbo 3 application instance as Dubbo registers it under
// /services/<application>/<ip:port>: Curator's ServiceInstance JSON with a ZookeeperInstance
// payload whose metadata carries the endpoints and the metadata revision.
type AppInstance struct {
	Name    string
	ID      string
	Address string
	// Port is the instance's main port; 0 when the JSON has none.
	Port uint32
	// Revision is the "dubbo.metadata.revision" metadata value.
	Revision string
	// Endpoints come from the "dubbo.endpoints" metadata, one per protocol and port; when the
	// metadata has none, the instance port with protocol dubbo.
	Endpoints []Endpoint
	// Metadata holds the string-valued metadata entries.
	Metadata map[string]string
}

// Endpoint is one protocol a Dubbo 3 instance serves on one port.
type Endpoint struct {
	Protocol string
	Port     uint32
}

// curatorInstance is the JSON Curator's JsonInstanceSerializer writes. Fields are decoded
// leniently (raw) because registries outlive the versions of the code that wrote them.
type curatorInstance struct {
	Name    json.RawMessage `json:"name"`
	ID      json.RawMessage `json:"id"`
	Address json.RawMessage `json:"address"`
	Port    json.RawMessage `json:"port"`
	Payload *struct {
		Metadata map[string]json.RawMessage `json:"metadata"`
	} `json:"payload"`
}

// Metadata keys Dubbo 3 writes into an instance.
const (
	metaRevision  = "dubbo.metadata.revision"
	metaEndpoints = "dubbo.endpoints"
)

// ParseInstanceJSON parses the data of an application instance node. It never panics; every
// problem is an error that says what is wrong.
func ParseInstanceJSON(data []byte) (AppInstance, error) {
	var out AppInstance
	if len(data) > dubbo.MaxItemBytes {
		return out, fmt.Errorf("instance data is %d bytes, more than %d", len(data), dubbo.MaxItemBytes)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return out, errors.New("instance node has no data")
	}
	var ci curatorInstance
	if err := json.Unmarshal(data, &ci); err != nil {
		return out, fmt.Errorf("instance data is not instance JSON: %s", jsonError(err))
	}
	var err error
	if out.Name, err = jsonString(ci.Name, "name"); err != nil {
		return out, err
	}
	if out.ID, err = jsonString(ci.ID, "id"); err != nil {
		return out, err
	}
	address, err := jsonString(ci.Address, "address")
	if err != nil {
		return out, err
	}
	if address == "" {
		return out, errors.New("instance has no address")
	}
	ip, err := netip.ParseAddr(strings.Trim(address, "[]"))
	switch {
	case err != nil:
		return out, fmt.Errorf("address %s is not an IP address", catalog.Quote(address, 64))
	case ip.Zone() != "":
		return out, fmt.Errorf("address %s has an IPv6 zone", catalog.Quote(address, 64))
	case ip.Unmap().IsUnspecified() || ip.IsMulticast():
		return out, fmt.Errorf("address %s cannot be an endpoint", ip)
	}
	out.Address = ip.Unmap().String()
	if out.Port, err = jsonPort(ci.Port, "port"); err != nil {
		return out, err
	}

	if ci.Payload != nil {
		out.Metadata = make(map[string]string, len(ci.Payload.Metadata))
		for k, raw := range ci.Payload.Metadata {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				out.Metadata[k] = s
			}
		}
	}
	out.Revision = out.Metadata[metaRevision]
	if text := strings.TrimSpace(out.Metadata[metaEndpoints]); text != "" {
		if out.Endpoints, err = parseEndpoints(text); err != nil {
			return out, err
		}
	}
	if len(out.Endpoints) == 0 {
		if out.Port == 0 {
			return out, errors.New("instance has neither a port nor dubbo.endpoints")
		}
		out.Endpoints = []Endpoint{{Protocol: "dubbo", Port: out.Port}}
	}
	return out, nil
}

// parseEndpoints reads the "dubbo.endpoints" metadata: a JSON array of {"port":…,"protocol":…}.
func parseEndpoints(text string) ([]Endpoint, error) {
	var raw []struct {
		Port     json.RawMessage `json:"port"`
		Protocol json.RawMessage `json:"protocol"`
	}
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return nil, fmt.Errorf("dubbo.endpoints is not a JSON list of endpoints: %s", jsonError(err))
	}
	eps := make([]Endpoint, 0, len(raw))
	for i, r := range raw {
		what := "dubbo.endpoints[" + strconv.Itoa(i) + "]"
		port, err := jsonPort(r.Port, what+".port")
		if err != nil {
			return nil, err
		}
		if port == 0 {
			return nil, fmt.Errorf("%s has no port", what)
		}
		proto, err := jsonString(r.Protocol, what+".protocol")
		if err != nil {
			return nil, err
		}
		if proto = strings.ToLower(proto); proto == "" {
			proto = "dubbo"
		}
		if !catalog.IsProtocol(proto) {
			return nil, fmt.Errorf("%s.protocol %s is not a lower-case token of at most 32 characters", what, catalog.Quote(proto, 32))
		}
		eps = append(eps, Endpoint{Protocol: proto, Port: port})
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return slices.Compact(eps), nil
}

// jsonString reads an optional JSON string: absent and null give "".
func jsonString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s is not a string", field)
	}
	return s, nil
}

// jsonPort reads an optional port, given as a number or as a numeric string: absent and null
// give 0.
func jsonPort(raw json.RawMessage, field string) (uint32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	text := string(raw)
	if s, err := jsonString(raw, field); err == nil {
		text = s
	}
	port, err := strconv.ParseUint(strings.TrimSpace(text), 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("%s %s is not a port from 1 to 65535", field, catalog.Quote(text, 16))
	}
	return uint32(port), nil
}

// jsonError keeps the JSON package's message but not the data it may quote at length.
func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %s has the wrong type (%s)", catalog.Quote(te.Field, 64), te.Value)
		}
		return fmt.Sprintf("wrong JSON type (%s)", te.Value)
	}
	return catalog.Clip(err.Error(), 120)
}

// appInstances turns a parsed application instance into endpoints, one per protocol and port.
func appInstances(app string, ai AppInstance) []catalog.Instance {
	labels := map[string]string{"application": dubbo.Intern(app)}
	if ai.Revision != "" {
		labels["revision"] = dubbo.Intern(ai.Revision)
	}
	labels, _ = catalog.FilterLabels(labels)
	out := make([]catalog.Instance, 0, len(ai.Endpoints))
	for _, ep := range ai.Endpoints {
		out = append(out, catalog.Instance{Address: ai.Address, Port: ep.Port, Protocol: ep.Protocol, Labels: maps.Clone(labels)})
	}
	return out
}
