// Package dubbo writes Dubbo providers into ZooKeeper exactly the way Dubbo's ZooKeeper
// registry does, for e2e tests, benchmarks and the demo.
package dubbo

import (
	"errors"
	"fmt"
	"net/url"
	"path"
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
	if err := EnsurePath(conn, dir); err != nil {
		return "", err
	}
	node := path.Join(dir, url.QueryEscape(p.URL()))
	if _, err := conn.Create(node, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return "", fmt.Errorf("registering %s: %w", node, err)
	}
	return node, nil
}

// Raw writes an arbitrary child under an interface's providers directory, for tests of
// malformed registrations.
func Raw(conn *zk.Conn, root, iface, child string) (string, error) {
	dir := ProvidersPath(root, iface)
	if err := EnsurePath(conn, dir); err != nil {
		return "", err
	}
	node := path.Join(dir, child)
	if _, err := conn.Create(node, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return "", fmt.Errorf("creating %s: %w", node, err)
	}
	return node, nil
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
