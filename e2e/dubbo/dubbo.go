// Package dubbo writes Dubbo providers into ZooKeeper exactly the way Dubbo's ZooKeeper
// registry does, for e2e tests, benchmarks and the demo: interface-level provider URLs, and
// Dubbo 3 application-level instances with their service name mapping and metadata.
package dubbo

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// Provider is one Dubbo provider registration.
type Provider struct {
	Protocol    string // "dubbo" when empty
	IP          string
	Port        int
	Interface   string
	Application string
	Version     string
	Group       string
	Methods     []string
	Weight      int
	// Extra parameters, written as they are.
	Params map[string]string
}

// URL renders the provider URL with the parameters Dubbo 3 writes, in Dubbo's order
// (alphabetical), including the volatile ones (pid, timestamp) a bridge must ignore.
func (p Provider) URL() string {
	q := url.Values{}
	q.Set("anyhost", "true")
	q.Set("application", p.Application)
	q.Set("deprecated", "false")
	q.Set("dubbo", "2.0.2")
	q.Set("dynamic", "true")
	q.Set("generic", "false")
	q.Set("interface", p.Interface)
	q.Set("methods", strings.Join(p.Methods, ","))
	q.Set("pid", "4242")
	q.Set("release", "3.2.10")
	q.Set("side", "provider")
	q.Set("timestamp", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if p.Version != "" {
		q.Set("version", p.Version)
	}
	if p.Group != "" {
		q.Set("group", p.Group)
	}
	if p.Weight > 0 {
		q.Set("weight", strconv.Itoa(p.Weight))
	}
	for k, v := range p.Params {
		q.Set(k, v)
	}
	proto := p.Protocol
	if proto == "" {
		proto = "dubbo"
	}
	// url.Values.Encode sorts keys, as Dubbo's URL.toFullString does.
	return fmt.Sprintf("%s://%s:%d/%s?%s", proto, p.IP, p.Port, p.Interface, q.Encode())
}

// ProvidersPath is the providers directory of an interface under root (default "dubbo").
func ProvidersPath(root, iface string) string {
	if root == "" {
		root = "dubbo"
	}
	return path.Join("/", root, iface, "providers")
}

// Register writes p under root as an ephemeral node named by its URL-encoded URL, creating
// the persistent parents Dubbo creates. It returns the node path.
func Register(conn *zk.Conn, root string, p Provider) (string, error) {
	dir := ProvidersPath(root, p.Interface)
	node := path.Join(dir, url.QueryEscape(p.URL()))
	if err := createEphemeral(conn, dir, node); err != nil {
		return "", fmt.Errorf("registering %s: %w", node, err)
	}
	return node, nil
}

// Raw writes an arbitrary child under an interface's providers directory, for tests of
// malformed registrations.
func Raw(conn *zk.Conn, root, iface, child string) (string, error) {
	dir := ProvidersPath(root, iface)
	node := path.Join(dir, child)
	if err := createEphemeral(conn, dir, node); err != nil {
		return "", fmt.Errorf("creating %s: %w", node, err)
	}
	return node, nil
}

// createEphemeral creates node (an existing one is kept) in dir. When dir exists that is one
// write, as for a Dubbo provider (its client remembers the paths it has created): dir's
// persistent nodes are created only when the create finds them missing.
func createEphemeral(conn *zk.Conn, dir, node string) error {
	create := func() error {
		_, err := conn.Create(node, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil
		}
		return err
	}
	err := create()
	if errors.Is(err, zk.ErrNoNode) {
		if err := EnsurePath(conn, dir); err != nil {
			return err
		}
		err = create()
	}
	return err
}

// EnsurePath creates every missing persistent node of p.
func EnsurePath(conn *zk.Conn, p string) error {
	cur := ""
	for part := range strings.SplitSeq(strings.Trim(p, "/"), "/") {
		cur += "/" + part
		if _, err := conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("creating %s: %w", cur, err)
		}
	}
	return nil
}

// DeleteTree removes p and everything below it.
func DeleteTree(conn *zk.Conn, p string) error {
	children, _, err := conn.Children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := DeleteTree(conn, path.Join(p, c)); err != nil {
			return err
		}
	}
	if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	return nil
}

// ServicesRoot is where Dubbo 3 registers application instances (its default rootPath).
const ServicesRoot = "/services"

// Instance is one Dubbo 3 application instance, as ZookeeperServiceDiscovery registers it.
type Instance struct {
	Application string
	IP          string
	// Port is the instance's main port: it names the node and fills Curator's port field.
	Port int
	// Revision is the metadata revision ("dubbo.metadata.revision"); a new one means the
	// application's exported services changed.
	Revision string
	// Endpoints become "dubbo.endpoints". Without any the metadata lacks that key, as in
	// instances of single-protocol applications written by older Dubbo 3 releases.
	Endpoints []Endpoint
	// StorageType is "dubbo.metadata.storage-type": "local" when empty, "remote" when the
	// metadata is published to the metadata report (see PublishMetadata).
	StorageType string
	// Extra metadata entries, written as they are.
	Metadata map[string]string
}

// Endpoint is one protocol an instance serves, with its port.
type Endpoint struct {
	Protocol string
	Port     int
}

// InstancePath is the node of an instance: /services/<application>/<ip>:<port>.
func InstancePath(app, ip string, port int) string {
	return path.Join(ServicesRoot, app, fmt.Sprintf("%s:%d", ip, port))
}

// Path is the instance's node.
func (in Instance) Path() string { return InstancePath(in.Application, in.IP, in.Port) }

// JSON renders the instance as Curator's JsonInstanceSerializer writes Dubbo 3.2's
// ServiceInstance with a ZookeeperInstance payload, field order included.
func (in Instance) JSON() ([]byte, error) {
	meta := map[string]string{
		"anyhost":                     "true",
		"application":                 in.Application,
		"dubbo.metadata.revision":     in.Revision,
		"dubbo.metadata.storage-type": cmp.Or(in.StorageType, "local"),
		"timestamp":                   strconv.FormatInt(time.Now().UnixMilli(), 10),
	}
	if len(in.Endpoints) > 0 {
		eps := make([]map[string]any, 0, len(in.Endpoints))
		for _, ep := range in.Endpoints {
			eps = append(eps, map[string]any{"port": ep.Port, "protocol": ep.Protocol})
		}
		b, err := json.Marshal(eps)
		if err != nil {
			return nil, err
		}
		meta["dubbo.endpoints"] = string(b)
	}
	// The MetadataService is exported on the instance's main port.
	params, err := json.Marshal(map[string]string{
		"prefer.serialization": "fastjson2,hessian2", "version": "1.0.0", "dubbo": "2.0.2",
		"release": "3.2.10", "side": "provider", "port": strconv.Itoa(in.Port), "protocol": "dubbo",
	})
	if err != nil {
		return nil, err
	}
	meta["dubbo.metadata-service.url-params"] = string(params)
	for k, v := range in.Metadata {
		meta[k] = v
	}
	type payload struct {
		Class    string            `json:"@class"`
		ID       *string           `json:"id"`
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	return json.Marshal(struct {
		Name                string  `json:"name"`
		ID                  string  `json:"id"`
		Address             string  `json:"address"`
		Port                int     `json:"port"`
		SSLPort             *int    `json:"sslPort"`
		Payload             payload `json:"payload"`
		RegistrationTimeUTC int64   `json:"registrationTimeUTC"`
		ServiceType         string  `json:"serviceType"`
		URISpec             *string `json:"uriSpec"`
	}{
		Name: in.Application, ID: fmt.Sprintf("%s:%d", in.IP, in.Port), Address: in.IP, Port: in.Port,
		Payload:             payload{Class: "org.apache.dubbo.registry.zookeeper.ZookeeperInstance", Name: in.Application, Metadata: meta},
		RegistrationTimeUTC: time.Now().UnixMilli(), ServiceType: "DYNAMIC",
	})
}

// RegisterInstance writes in as an ephemeral node of conn's session, creating the persistent
// parents. Like Curator, it replaces a node left at the same path. It returns the node path.
func RegisterInstance(conn *zk.Conn, in Instance) (string, error) {
	data, err := in.JSON()
	if err != nil {
		return "", fmt.Errorf("encoding instance %s: %w", in.Path(), err)
	}
	return RawInstance(conn, in.Application, fmt.Sprintf("%s:%d", in.IP, in.Port), data)
}

// UpdateInstance rewrites a registered instance's data, as Dubbo does when its metadata
// revision changes.
func UpdateInstance(conn *zk.Conn, in Instance) error {
	data, err := in.JSON()
	if err != nil {
		return fmt.Errorf("encoding instance %s: %w", in.Path(), err)
	}
	if _, err := conn.Set(in.Path(), data, -1); err != nil {
		return fmt.Errorf("updating %s: %w", in.Path(), err)
	}
	return nil
}

// RawInstance writes arbitrary data as the ephemeral instance node /services/<app>/<id>, for
// tests of malformed instances. It returns the node path.
func RawInstance(conn *zk.Conn, app, id string, data []byte) (string, error) {
	dir := path.Join(ServicesRoot, app)
	if err := EnsurePath(conn, dir); err != nil {
		return "", err
	}
	node := path.Join(dir, id)
	for range 3 {
		_, err := conn.Create(node, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		if !errors.Is(err, zk.ErrNodeExists) {
			if err != nil {
				return "", fmt.Errorf("registering %s: %w", node, err)
			}
			return node, nil
		}
		if err := conn.Delete(node, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return "", fmt.Errorf("replacing %s: %w", node, err)
		}
	}
	return "", fmt.Errorf("registering %s: the node keeps coming back", node)
}

// MappingPath is the service name mapping node of an interface: /<root>/mapping/<interface>.
func MappingPath(root, iface string) string {
	return path.Join("/", cmp.Or(root, "dubbo"), "mapping", iface)
}

// PublishMapping adds applications to an interface's service name mapping as Dubbo's
// ZooKeeper metadata report does: the node's data is the comma-separated application names,
// and each is appended by a compare-and-set on the node version, retried when another
// writer got there first.
func PublishMapping(conn *zk.Conn, root, iface string, apps ...string) error {
	node := MappingPath(root, iface)
	for _, app := range apps {
		if err := appendMapping(conn, node, app); err != nil {
			return err
		}
	}
	return nil
}

func appendMapping(conn *zk.Conn, node, app string) error {
	for range 20 {
		data, stat, err := conn.Get(node)
		if errors.Is(err, zk.ErrNoNode) {
			if err := EnsurePath(conn, path.Dir(node)); err != nil {
				return err
			}
			_, err = conn.Create(node, []byte(app), 0, zk.WorldACL(zk.PermAll))
			if errors.Is(err, zk.ErrNodeExists) {
				continue // created meanwhile: append to it
			}
			if err != nil {
				return fmt.Errorf("creating mapping %s: %w", node, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading mapping %s: %w", node, err)
		}
		current := string(data)
		if current != "" && slices.Contains(strings.Split(current, ","), app) {
			return nil
		}
		next := app
		if current != "" {
			next = current + "," + app
		}
		_, err = conn.Set(node, []byte(next), stat.Version)
		if errors.Is(err, zk.ErrBadVersion) {
			continue
		}
		if err != nil {
			return fmt.Errorf("appending %s to mapping %s: %w", app, node, err)
		}
		return nil
	}
	return fmt.Errorf("appending %s to mapping %s: too many concurrent changes", app, node)
}

// MetadataService is one service an application exports, as listed in its MetadataInfo.
type MetadataService struct {
	Interface string
	Group     string
	Version   string
	Protocol  string // "dubbo" when empty
	Port      int
	Methods   []string
	// Extra parameters, written as they are.
	Params map[string]string
}

// Key is the service's key in MetadataInfo.services: [group/]interface[:version]:protocol.
func (s MetadataService) Key() string {
	k := s.Interface
	if s.Group != "" {
		k = s.Group + "/" + k
	}
	if s.Version != "" {
		k += ":" + s.Version
	}
	return k + ":" + cmp.Or(s.Protocol, "dubbo")
}

// MetadataPath is the node of an application's metadata revision:
// /<root>/metadata/<application>/<revision>.
func MetadataPath(root, app, revision string) string {
	return path.Join("/", cmp.Or(root, "dubbo"), "metadata", app, revision)
}

// MetadataJSON renders Dubbo's MetadataInfo for one application revision.
func MetadataJSON(app, revision string, services []MetadataService) ([]byte, error) {
	type serviceInfo struct {
		Name     string            `json:"name"`
		Group    string            `json:"group,omitempty"`
		Version  string            `json:"version,omitempty"`
		Protocol string            `json:"protocol"`
		Port     int               `json:"port"`
		Path     string            `json:"path"`
		Params   map[string]string `json:"params"`
	}
	out := map[string]serviceInfo{}
	for _, s := range services {
		params := map[string]string{
			"application": app, "interface": s.Interface, "side": "provider", "release": "3.2.10",
			"methods": strings.Join(s.Methods, ","), "dubbo": "2.0.2", "deprecated": "false",
			"dynamic": "true", "generic": "false", "anyhost": "true",
		}
		if s.Version != "" {
			params["version"] = s.Version
		}
		if s.Group != "" {
			params["group"] = s.Group
		}
		for k, v := range s.Params {
			params[k] = v
		}
		out[s.Key()] = serviceInfo{Name: s.Interface, Group: s.Group, Version: s.Version,
			Protocol: cmp.Or(s.Protocol, "dubbo"), Port: s.Port, Path: s.Interface, Params: params}
	}
	return json.Marshal(struct {
		App      string                 `json:"app"`
		Revision string                 `json:"revision"`
		Services map[string]serviceInfo `json:"services"`
	}{app, revision, out})
}

// PublishMetadata writes an application revision's MetadataInfo as a persistent node, as
// Dubbo's ZooKeeper metadata report does when metadata storage is remote.
func PublishMetadata(conn *zk.Conn, root, app, revision string, services []MetadataService) error {
	data, err := MetadataJSON(app, revision, services)
	if err != nil {
		return fmt.Errorf("encoding metadata of %s revision %s: %w", app, revision, err)
	}
	node := MetadataPath(root, app, revision)
	if err := EnsurePath(conn, path.Dir(node)); err != nil {
		return err
	}
	_, err = conn.Create(node, data, 0, zk.WorldACL(zk.PermAll))
	if errors.Is(err, zk.ErrNodeExists) {
		_, err = conn.Set(node, data, -1)
	}
	if err != nil {
		return fmt.Errorf("publishing metadata %s: %w", node, err)
	}
	return nil
}
