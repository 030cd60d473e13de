package zookeeper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

// ServiceMetadata is one service an application revision exports, as listed in Dubbo 3's
// MetadataInfo under /<root>/metadata/<application>/<revision>.
type ServiceMetadata struct {
	Interface string
	Group     string
	Version   string
	Protocol  string
	// Port is 0 when the metadata does not say.
	Port uint32
}

// maxMetadataServices bounds the services read from one metadata node; a real application
// exports tens.
const maxMetadataServices = 4096

// ParseMetadataJSON parses Dubbo 3's MetadataInfo JSON:
//
//	{"app":"demo","revision":"…","services":{"group/iface:version:dubbo":{"name":"iface",
//	  "group":"group","version":"version","protocol":"dubbo","port":20880,"path":"iface","params":{…}}}}
//
// It returns the services sorted by interface, protocol, group and version. It never panics;
// a service entry without a name or protocol makes the whole node an error, because the
// interfaces it lists would be incomplete.
func ParseMetadataJSON(data []byte) ([]ServiceMetadata, error) {
	if len(data) > dubbo.MaxItemBytes {
		return nil, fmt.Errorf("metadata is %d bytes, more than %d", len(data), dubbo.MaxItemBytes)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, errors.New("metadata node has no data")
	}
	var info struct {
		Services map[string]struct {
			Name     json.RawMessage `json:"name"`
			Group    json.RawMessage `json:"group"`
			Version  json.RawMessage `json:"version"`
			Protocol json.RawMessage `json:"protocol"`
			Port     json.RawMessage `json:"port"`
		} `json:"services"`
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("metadata is not MetadataInfo JSON: %s", jsonError(err))
	}
	if len(info.Services) > maxMetadataServices {
		return nil, fmt.Errorf("metadata lists %d services, more than %d", len(info.Services), maxMetadataServices)
	}
	out := make([]ServiceMetadata, 0, len(info.Services))
	for key, s := range info.Services {
		what := "services[" + catalog.Quote(key, 128) + "]"
		var (
			m   ServiceMetadata
			err error
		)
		if m.Interface, err = jsonString(s.Name, what+".name"); err != nil {
			return nil, err
		}
		if m.Group, err = jsonString(s.Group, what+".group"); err != nil {
			return nil, err
		}
		if m.Version, err = jsonString(s.Version, what+".version"); err != nil {
			return nil, err
		}
		if m.Protocol, err = jsonString(s.Protocol, what+".protocol"); err != nil {
			return nil, err
		}
		if m.Port, err = jsonPort(s.Port, what+".port"); err != nil {
			return nil, err
		}
		m.Protocol = strings.ToLower(m.Protocol)
		switch {
		case strings.TrimSpace(m.Interface) == "" || !utf8.ValidString(m.Interface):
			return nil, fmt.Errorf("%s has no interface name", what)
		case !catalog.IsProtocol(m.Protocol):
			return nil, fmt.Errorf("%s.protocol %s is not a lower-case token of at most 32 characters", what, catalog.Quote(m.Protocol, 32))
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b ServiceMetadata) int {
		for _, c := range [][2]string{{a.Interface, b.Interface}, {a.Protocol, b.Protocol}, {a.Group, b.Group}, {a.Version, b.Version}} {
			if r := strings.Compare(c[0], c[1]); r != 0 {
				return r
			}
		}
		return int(a.Port) - int(b.Port)
	})
	return out, nil
}

// ParseMapping parses the data of /<root>/mapping/<interface>: the comma-separated names of
// the applications serving the interface, as Dubbo appends them. It returns them sorted,
// without duplicates, and skips names that cannot be ZooKeeper node names.
func ParseMapping(data []byte) []string {
	if len(data) > dubbo.MaxItemBytes {
		data = data[:dubbo.MaxItemBytes]
	}
	var apps []string
	for a := range strings.SplitSeq(string(data), ",") {
		a = strings.TrimSpace(a)
		if a != "" && a != "." && a != ".." && len(a) <= 256 && utf8.ValidString(a) && !strings.ContainsAny(a, "/\x00") {
			apps = append(apps, a)
		}
	}
	slices.Sort(apps)
	return slices.Compact(apps)
}

// validRevision reports whether a metadata revision can name a node below the application's
// metadata node (it comes from instance data, so it is checked before it becomes a path).
func validRevision(rev string) bool {
	return rev != "" && rev != "." && rev != ".." && len(rev) <= 128 && utf8.ValidString(rev) && !strings.ContainsAny(rev, "/\x00")
}
