package zookeeper

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
	"github.com/meltemi-mesh/meltemi/registries/internal/hosttemplate"
)

// kind says what a watched ZooKeeper node holds.
type kind uint8

const (
	kindRoot         kind = iota + 1 // /<root>: children are interfaces
	kindProviders                    // /<root>/<interface>/providers: children are provider URLs
	kindServices                     // /services: children are applications
	kindApp                          // /services/<app>: children are instance ids
	kindInstance                     // /services/<app>/<id>: data is instance JSON
	kindMapping                      // /<root>/mapping: children are interfaces
	kindMappingEntry                 // /<root>/mapping/<interface>: data is application names
	kindIfaceDir                     // /<root>/<interface>: watched while its providers node is missing
	kindMetadata                     // /<root>/metadata/<app>/<revision>: data is MetadataInfo JSON (not watched)
)

// mayBeMissing is true for configured nodes that can appear after we first look: they get an
// exists watch while missing.
func (k kind) mayBeMissing() bool {
	return k == kindRoot || k == kindServices || k == kindMapping
}

// node is one ZooKeeper path the watcher reads, and what it belongs to.
type node struct {
	kind   kind
	path   string
	root   string       // kindRoot, kindMapping
	iface  *ifaceState  // kindProviders, kindIfaceDir
	app    *appState    // kindApp, kindInstance
	id     string       // kindInstance: instance id
	mapped *mappedState // kindMappingEntry
	meta   *metaState   // kindMetadata
}

type rootState struct {
	name   string
	ifaces map[string]*ifaceState // by raw (URL-encoded) child name
	bad    map[string]bool        // child names rejected already
}

type ifaceState struct {
	key, name string
	node      *node               // the providers node
	dir       *node               // the interface node
	providers map[string]provider // by child name, which is the whole provider URL
	// labelSets shares one label map among the providers that have the same labels (usually
	// all of an interface's providers of one version); counted, so churn cannot grow it.
	labelSets map[string]*labelSet
	// known holds the providers a resync's previous tree parsed for this interface; a node's
	// name is its whole URL, so they need no parsing again. Read-only; nil after the listing.
	known map[string]provider
}

type labelSet struct {
	labels map[string]string
	refs   int
}

// provider is a parsed provider node. A child's name never changes, so it is parsed once.
type provider struct {
	inst     catalog.Instance
	ok       bool
	labelKey string
}

type appState struct {
	key, name string
	node      *node
	instances map[string]*appInstance // by instance id (child name)
}

type appInstance struct {
	node      *node
	revision  string
	endpoints []catalog.Instance
}

// mappedState is an interface that /<root>/mapping maps to applications: a service whose
// endpoints are those applications' instances that serve the interface.
type mappedState struct {
	key, root, iface string
	node             *node
	apps             []string // sorted
}

// metaState is the metadata of one application revision in one root. A revision names its
// content, so a node that was read is not read again until the next listing.
type metaState struct {
	node     *node
	root     string
	app      string
	ok       bool              // parsed; false while unread, absent or invalid
	services []ServiceMetadata // sorted by interface
}

// forInterface returns the entries of one interface.
func (m *metaState) forInterface(iface string) []ServiceMetadata {
	i, _ := slices.BinarySearchFunc(m.services, iface, func(s ServiceMetadata, name string) int {
		return strings.Compare(s.Interface, name)
	})
	j := i
	for j < len(m.services) && m.services[j].Interface == iface {
		j++
	}
	return m.services[i:j]
}

// tree is the registry content the watcher knows, rebuilt from scratch for every snapshot.
type tree struct {
	cfg     *config
	nodes   map[string]*node
	rootsBy map[string]*rootState
	ifaces  map[string]*ifaceState     // by service key
	apps    map[string]*appState       // by application name
	mapped  map[string]*mappedState    // by service key
	byApp   map[string]map[string]bool // application name -> keys of the mapped interfaces naming it
	meta    map[string]*metaState      // by path
	changed map[string]bool            // service keys whose content may have changed
	// prev is the tree a resync replaces, consulted for parsed providers while listing.
	prev *tree
}

func newTree(cfg *config) *tree {
	return &tree{
		cfg: cfg, nodes: map[string]*node{}, rootsBy: map[string]*rootState{},
		ifaces: map[string]*ifaceState{}, apps: map[string]*appState{},
		mapped: map[string]*mappedState{}, byApp: map[string]map[string]bool{},
		meta: map[string]*metaState{}, changed: map[string]bool{},
	}
}

// roots registers and returns the nodes a listing starts from.
func (t *tree) roots() []*node {
	var out []*node
	for _, r := range t.cfg.roots {
		if t.cfg.interfaces() {
			t.rootsBy[r] = &rootState{name: r, ifaces: map[string]*ifaceState{}, bad: map[string]bool{}}
			out = append(out, t.add(&node{kind: kindRoot, path: t.cfg.path(r), root: r}))
		}
		if t.cfg.mapping() {
			out = append(out, t.add(&node{kind: kindMapping, path: t.cfg.path(r, "mapping"), root: r}))
		}
	}
	if t.cfg.applications() {
		out = append(out, t.add(&node{kind: kindServices, path: t.cfg.path(servicesRoot)}))
	}
	return out
}

func (t *tree) add(n *node) *node {
	t.nodes[n.path] = n
	return n
}

func (t *tree) remove(n *node) {
	if n != nil && t.nodes[n.path] == n {
		delete(t.nodes, n.path)
	}
}

func (t *tree) lookup(path string) *node {
	if t == nil {
		return nil
	}
	return t.nodes[path]
}

// takeChanged returns the keys of the services that may have changed, including the mapped
// interfaces that depend on a changed application or interface-level service.
func (t *tree) takeChanged() []string {
	if len(t.mapped) > 0 {
		for _, k := range slices.Collect(maps.Keys(t.changed)) {
			if app, ok := strings.CutPrefix(k, appKeyPrefix+":"); ok {
				for mk := range t.byApp[app] {
					t.changed[mk] = true
				}
			} else if mk := mappedKeyPrefix + ":" + k; t.mapped[mk] != nil {
				t.changed[mk] = true
			}
		}
	}
	keys := slices.Sorted(maps.Keys(t.changed))
	clear(t.changed)
	return keys
}

// keys returns every service key the tree knows, sorted.
func (t *tree) keys() []string {
	keys := make([]string, 0, len(t.ifaces)+len(t.apps)+len(t.mapped))
	for k := range t.ifaces {
		keys = append(keys, k)
	}
	for _, a := range t.apps {
		keys = append(keys, a.key)
	}
	for k := range t.mapped {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// apply records a successful read and returns the nodes it revealed, to be read next.
func (t *tree) apply(r readResult, w *watcher) []*node {
	n := r.n
	switch n.kind {
	case kindRoot:
		return t.applyRoot(n, r.children, w)
	case kindProviders:
		t.applyProviders(n.iface, r.children, r.parsed, w)
	case kindServices:
		return t.applyServices(n, r.children)
	case kindApp:
		return t.applyApp(n.app, r.children)
	case kindInstance:
		return t.applyInstance(n, r, w)
	case kindMapping:
		return t.applyMapping(n, r.children, w)
	case kindMappingEntry:
		return t.applyMappingEntry(n.mapped, r, w)
	case kindMetadata:
		t.applyMetadata(n.meta, r, w)
	}
	return nil
}

func (t *tree) applyRoot(n *node, children []string, w *watcher) []*node {
	rs := t.rootsBy[n.root]
	present := make(map[string]bool, len(children))
	for _, c := range children {
		if !reservedRootChildren[c] {
			present[c] = true
		}
	}
	for raw, is := range rs.ifaces {
		if !present[raw] {
			t.removeIface(rs, raw, is)
		}
	}
	for raw := range rs.bad {
		if !present[raw] {
			delete(rs.bad, raw)
		}
	}
	var next []*node
	for _, raw := range children {
		if !present[raw] || rs.ifaces[raw] != nil || rs.bad[raw] {
			continue
		}
		name, err := url.QueryUnescape(raw)
		if err == nil && (!utf8.ValidString(name) || strings.TrimSpace(name) == "") {
			err = fmt.Errorf("decodes to an empty or non-UTF-8 name")
		}
		key := n.root + ":" + name
		if err == nil && t.ifaces[key] != nil {
			err = fmt.Errorf("interface %s is also registered under another encoding of its name", catalog.Quote(name, 128))
		}
		if err != nil {
			rs.bad[raw] = true
			w.reject(n.path+"/"+raw, "interface node name: "+err.Error())
			continue
		}
		is := &ifaceState{key: key, name: name, providers: map[string]provider{}, labelSets: map[string]*labelSet{}}
		if old := t.prev.iface(key); old != nil {
			is.known = old.providers
		}
		is.node = t.add(&node{kind: kindProviders, path: t.cfg.path(n.root, raw, "providers"), iface: is})
		is.dir = t.add(&node{kind: kindIfaceDir, path: t.cfg.path(n.root, raw), iface: is})
		rs.ifaces[raw] = is
		t.ifaces[key] = is
		next = append(next, is.node)
	}
	return next
}

func (t *tree) iface(key string) *ifaceState {
	if t == nil {
		return nil
	}
	return t.ifaces[key]
}

func (is *ifaceState) hasProviders() bool {
	for _, p := range is.providers {
		if p.ok {
			return true
		}
	}
	return false
}

func (t *tree) removeIface(rs *rootState, raw string, is *ifaceState) {
	t.remove(is.node)
	t.remove(is.dir)
	delete(rs.ifaces, raw)
	delete(t.ifaces, is.key)
	t.changed[is.key] = true
}

func (t *tree) applyProviders(is *ifaceState, children []string, parsed map[string]parsedChild, w *watcher) {
	present := make(map[string]bool, len(children))
	for _, c := range children {
		present[c] = true
	}
	for c, p := range is.providers {
		if !present[c] {
			delete(is.providers, c)
			if p.ok {
				t.changed[is.key] = true
				if ls := is.labelSets[p.labelKey]; ls != nil {
					if ls.refs--; ls.refs == 0 {
						delete(is.labelSets, p.labelKey)
					}
				}
			}
		}
	}
	for _, c := range children {
		if _, seen := is.providers[c]; seen {
			continue
		}
		pc, ok := parsed[c]
		if !ok {
			pc = parseProviderChild(is.name, c)
		}
		switch {
		case pc.reject != "":
			w.reject(is.node.path+"/"+c, pc.reject)
		case pc.skip != "":
			w.log.Debug("ignoring provider node", "path", catalog.Clip(is.node.path+"/"+c, 256), "why", pc.skip)
		}
		p := pc.provider
		if p.ok {
			t.changed[is.key] = true
			if ls := is.labelSets[p.labelKey]; ls != nil {
				p.inst.Labels = ls.labels
				ls.refs++
			} else {
				is.labelSets[p.labelKey] = &labelSet{labels: p.inst.Labels, refs: 1}
			}
		}
		is.providers[c] = p
	}
}

// labelKey is a canonical form of a label set. Label keys contain neither '=' nor NUL.
func labelKey(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// parsedChild is a provider node parsed, with why it is not used if it is not.
type parsedChild struct {
	provider
	reject string
	skip   string
}

// parseProviderChild parses the provider node child of interface iface. It is pure, so the
// read workers run it for the nodes they list.
func parseProviderChild(iface, child string) parsedChild {
	u, err := dubbo.ParseProviderURL(child)
	if err != nil {
		return parsedChild{reject: err.Error()}
	}
	if u.Interface != iface {
		return parsedChild{reject: fmt.Sprintf("URL is for interface %s, not %s", catalog.Quote(u.Interface, 128), catalog.Quote(iface, 128))}
	}
	inst, skip := dubbo.ProviderInstance(u)
	if skip != "" {
		return parsedChild{skip: skip}
	}
	return parsedChild{provider: provider{inst: inst, ok: true, labelKey: labelKey(inst.Labels)}}
}

// parseNew parses the children that is does not know yet. It only reads the tree, so it can
// run in a read worker while the run loop waits.
func parseNew(is *ifaceState, children []string) map[string]parsedChild {
	var out map[string]parsedChild
	for _, c := range children {
		if _, seen := is.providers[c]; seen {
			continue
		}
		if out == nil {
			out = make(map[string]parsedChild)
		}
		if p, ok := is.known[c]; ok {
			// Already reported, if it was rejected; a resync does not report it again.
			out[c] = parsedChild{provider: p}
			continue
		}
		out[c] = parseProviderChild(is.name, c)
	}
	return out
}

func (t *tree) applyServices(n *node, children []string) []*node {
	present := make(map[string]bool, len(children))
	for _, c := range children {
		present[c] = true
	}
	for name, as := range t.apps {
		if !present[name] {
			for _, in := range as.instances {
				t.remove(in.node)
			}
			t.remove(as.node)
			delete(t.apps, name)
			t.changed[as.key] = true
		}
	}
	var next []*node
	for _, name := range children {
		if t.apps[name] != nil {
			continue
		}
		as := &appState{key: appKeyPrefix + ":" + name, name: name, instances: map[string]*appInstance{}}
		as.node = t.add(&node{kind: kindApp, path: n.path + "/" + name, app: as})
		t.apps[name] = as
		next = append(next, as.node)
	}
	return next
}

func (t *tree) applyApp(as *appState, children []string) []*node {
	present := make(map[string]bool, len(children))
	for _, c := range children {
		present[c] = true
	}
	for id, in := range as.instances {
		if !present[id] {
			t.remove(in.node)
			delete(as.instances, id)
			t.changed[as.key] = true
		}
	}
	var next []*node
	for _, id := range children {
		if as.instances[id] != nil {
			continue
		}
		in := &appInstance{}
		in.node = t.add(&node{kind: kindInstance, path: as.node.path + "/" + id, app: as, id: id})
		as.instances[id] = in
		next = append(next, in.node)
	}
	return next
}

// applyInstance records an instance's data and returns the metadata nodes its revision needs.
func (t *tree) applyInstance(n *node, r readResult, w *watcher) []*node {
	as := n.app
	in := as.instances[n.id]
	if in == nil || in.node != n {
		return nil
	}
	t.changed[as.key] = true
	if r.absent {
		t.remove(n)
		delete(as.instances, n.id)
		return nil
	}
	ai, err := ParseInstanceJSON(r.data)
	if err != nil {
		in.endpoints, in.revision = nil, ""
		w.reject(n.path, err.Error())
		return nil
	}
	in.endpoints, in.revision = appInstances(as.name, ai), ai.Revision
	var next []*node
	for _, root := range t.rootsMapping(as.name) {
		if m := t.needMetadata(root, as.name, in.revision); m != nil {
			next = append(next, m)
		}
	}
	return next
}

// rootsMapping returns the roots whose mapping names app.
func (t *tree) rootsMapping(app string) []string {
	var roots []string
	for mk := range t.byApp[app] {
		if r := t.mapped[mk].root; !slices.Contains(roots, r) {
			roots = append(roots, r)
		}
	}
	return roots
}

// needMetadata returns the node of an application revision's metadata when it still has to
// be read.
func (t *tree) needMetadata(root, app, revision string) *node {
	if !validRevision(revision) {
		return nil
	}
	p := t.cfg.path(root, "metadata", app, revision)
	if t.meta[p] != nil {
		return nil
	}
	ms := &metaState{root: root, app: app}
	ms.node = t.add(&node{kind: kindMetadata, path: p, meta: ms})
	t.meta[p] = ms
	return ms.node
}

func (t *tree) applyMetadata(ms *metaState, r readResult, w *watcher) {
	ms.ok, ms.services = false, nil
	if !r.absent {
		services, err := ParseMetadataJSON(r.data)
		if err != nil {
			// The mapped interfaces fall back to all of the revision's endpoints.
			w.reject(ms.node.path, err.Error())
		} else {
			ms.ok, ms.services = true, services
		}
	}
	for mk := range t.byApp[ms.app] {
		if t.mapped[mk].root == ms.root {
			t.changed[mk] = true
		}
	}
}

func (t *tree) applyMapping(n *node, children []string, w *watcher) []*node {
	present := make(map[string]bool, len(children))
	for _, c := range children {
		present[c] = true
	}
	prefix := mappedKeyPrefix + ":" + n.root + ":"
	for key, ms := range t.mapped {
		if ms.root == n.root && !present[ms.iface] {
			t.setMappedApps(ms, nil)
			t.remove(ms.node)
			delete(t.mapped, key)
			t.changed[key] = true
		}
	}
	var next []*node
	for _, iface := range children {
		key := prefix + iface
		if t.mapped[key] != nil {
			continue
		}
		if !utf8.ValidString(iface) || strings.TrimSpace(iface) == "" {
			w.reject(n.path+"/"+iface, "mapping node name is not an interface name")
			continue
		}
		ms := &mappedState{key: key, root: n.root, iface: iface}
		ms.node = t.add(&node{kind: kindMappingEntry, path: n.path + "/" + iface, mapped: ms})
		t.mapped[key] = ms
		next = append(next, ms.node)
	}
	return next
}

// applyMappingEntry records the applications mapped to an interface and returns the metadata
// nodes their instances need.
func (t *tree) applyMappingEntry(ms *mappedState, r readResult, w *watcher) []*node {
	var apps []string
	if !r.absent {
		apps = ParseMapping(r.data)
	}
	if slices.Equal(apps, ms.apps) {
		return nil
	}
	w.log.Debug("interface mapped to applications", "root", ms.root, "interface", ms.iface, "applications", strings.Join(apps, ","))
	t.setMappedApps(ms, apps)
	t.changed[ms.key] = true
	var next []*node
	for _, app := range apps {
		if as := t.apps[app]; as != nil {
			for _, in := range as.instances {
				if m := t.needMetadata(ms.root, app, in.revision); m != nil {
					next = append(next, m)
				}
			}
		}
	}
	return next
}

func (t *tree) setMappedApps(ms *mappedState, apps []string) {
	for _, a := range ms.apps {
		if set := t.byApp[a]; set != nil {
			if delete(set, ms.key); len(set) == 0 {
				delete(t.byApp, a)
			}
		}
	}
	ms.apps = apps
	for _, a := range apps {
		if t.byApp[a] == nil {
			t.byApp[a] = map[string]bool{}
		}
		t.byApp[a][ms.key] = true
	}
}

// mappedInstances returns the endpoints of a mapped interface: those of its applications'
// instances whose revision serves it. An instance whose revision's metadata is missing or
// invalid contributes all its endpoints, since nothing says which of them serve the interface.
func (t *tree) mappedInstances(ms *mappedState) []catalog.Instance {
	var insts []catalog.Instance
	for _, app := range ms.apps {
		as := t.apps[app]
		if as == nil {
			continue
		}
		for _, in := range as.instances {
			var md *metaState
			if validRevision(in.revision) {
				md = t.meta[t.cfg.path(ms.root, "metadata", app, in.revision)]
			}
			if md == nil || !md.ok {
				insts = append(insts, in.endpoints...)
				continue
			}
			entries := md.forInterface(ms.iface)
			var labels map[string]string
			if len(entries) == 1 {
				labels = map[string]string{"version": entries[0].Version, "group": entries[0].Group}
			}
			for _, ep := range in.endpoints {
				if !slices.ContainsFunc(entries, func(s ServiceMetadata) bool { return s.Protocol == ep.Protocol }) {
					continue
				}
				if labels != nil {
					merged := maps.Clone(ep.Labels)
					for k, v := range labels {
						if v != "" {
							merged[k] = dubbo.Intern(v)
						}
					}
					ep.Labels, _ = catalog.FilterLabels(merged)
				}
				insts = append(insts, ep)
			}
		}
	}
	return insts
}

// service builds the current state of a service. reason is non-empty when the service
// exists but cannot be reported (its host is invalid); a service without usable endpoints
// comes back with no instances.
func (t *tree) service(key string, host *hosttemplate.Template) (svc catalog.Service, reason string) {
	var (
		insts []catalog.Instance
		vars  dubbo.HostVars
	)
	if is := t.ifaces[key]; is != nil {
		insts = make([]catalog.Instance, 0, len(is.providers))
		for _, p := range is.providers {
			if p.ok {
				insts = append(insts, p.inst)
			}
		}
		vars = dubbo.InterfaceVars(is.name, insts)
	} else if ms := t.mapped[key]; ms != nil {
		if is := t.ifaces[ms.root+":"+ms.iface]; is != nil && is.hasProviders() {
			// Registered at interface level too (Dubbo 3 registers both ways by default):
			// those registrations serve the interface, without doubling its endpoints.
			return catalog.Service{Key: key}, ""
		}
		insts = t.mappedInstances(ms)
		vars = dubbo.InterfaceVars(ms.iface, insts)
	} else if as := t.apps[strings.TrimPrefix(key, appKeyPrefix+":")]; as != nil && as.key == key {
		for _, in := range as.instances {
			insts = append(insts, in.endpoints...)
		}
		vars = dubbo.HostVars{
			Application: as.name,
			Protocol:    dubbo.Shared(insts, func(i catalog.Instance) string { return i.Protocol }),
		}
	}
	if len(insts) == 0 {
		return catalog.Service{Key: key}, ""
	}
	h, err := host.Render(vars)
	if err != nil {
		return catalog.Service{}, err.Error()
	}
	// The parsers emit only endpoints that pass catalog.Validate (the table and fuzz tests check
	// it), and the host validates again; here they only get their canonical order.
	svc = catalog.Service{Key: key, Host: h, Instances: insts}
	svc.Normalize()
	return svc, ""
}
