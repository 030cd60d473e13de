// Package proxies says, as data, which Envoy extensions each proxy Meltemi supports contains, so
// that nothing is sent to a proxy that cannot load it: Envoy rejects a listener whose filter it
// does not know, and with it every connection that listener serves.
//
// A profile is a file under profiles/: one extension name a line, read from the proxy's build.
// For istio-proxy that is istio/proxy's bazel/extension_config/extensions_build_config.bzl of
// the release (ENVOY_EXTENSIONS less ISTIO_DISABLED_EXTENSIONS, plus
// ISTIO_ENABLED_CONTRIB_EXTENSIONS); for the MetaProtocol proxy, the istio/proxy it is built on
// plus MetaProtocol's own extensions. Each file's header names the upstream commit. Add a
// profile when Meltemi adds a supported Istio or MetaProtocol version.
package proxies

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
)

// Profiles Meltemi targets unless told otherwise: the stock istio-proxy of the newest supported
// Istio, and the newest MetaProtocol proxy.
const (
	DefaultStock        = "istio-proxy-1.31"
	DefaultMetaProtocol = "metaprotocol-1.4.2"
)

//go:embed profiles/*.txt
var files embed.FS

// Profile is what one proxy build can load.
type Profile struct {
	// Name is the file's name without .txt, e.g. istio-proxy-1.31.
	Name string
	// Title is the file's first comment line, e.g. "Stock istio-proxy of Istio 1.31".
	Title string
	// MetaProtocol reports whether the proxy has the MetaProtocol filter.
	MetaProtocol bool
	extensions   map[string]bool
}

// Has reports whether the proxy contains the extension.
func (p *Profile) Has(extension string) bool { return p.extensions[extension] }

func (p *Profile) String() string { return fmt.Sprintf("%s (%s)", p.Name, p.Title) }

var (
	loadOnce sync.Once
	loaded   map[string]*Profile
	loadErr  error
)

func load() (map[string]*Profile, error) {
	loadOnce.Do(func() {
		loaded = map[string]*Profile{}
		loadErr = fs.WalkDir(files, "profiles", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			p, err := parse(strings.TrimSuffix(d.Name(), ".txt"), path)
			if err != nil {
				return err
			}
			loaded[p.Name] = p
			return nil
		})
	})
	return loaded, loadErr
}

func parse(name, path string) (*Profile, error) {
	f, err := files.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &Profile{Name: name, extensions: map[string]bool{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			if p.Title == "" {
				p.Title = strings.TrimSpace(rest)
			}
			continue
		}
		ext, _, _ := strings.Cut(line, "#")
		if ext = strings.TrimSpace(ext); ext != "" {
			p.extensions[ext] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("proxy profile %s: %w", name, err)
	}
	p.MetaProtocol = p.extensions["envoy.filters.network.meta_protocol_proxy"]
	return p, nil
}

// Get returns the named profile.
func Get(name string) (*Profile, error) {
	all, err := load()
	if err != nil {
		return nil, err
	}
	if p, ok := all[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("no proxy profile %q (known: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the known profiles, sorted.
func Names() []string {
	all, _ := load()
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Extensions returns the extension names a piece of proxy configuration (decoded JSON: maps,
// slices, strings) names, sorted: the value of every "name" field that is an Envoy or
// MetaProtocol extension name (filters, codecs, access loggers, cluster types).
func Extensions(config any) []string {
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if n, ok := v["name"].(string); ok && isExtensionName(n) {
				seen[n] = true
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(config)
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func isExtensionName(s string) bool {
	return (strings.HasPrefix(s, "envoy.") || strings.HasPrefix(s, "aeraki.")) && !strings.ContainsAny(s, " /:")
}

// Missing returns the extensions config names that the proxy lacks, sorted.
func (p *Profile) Missing(config any) []string {
	var out []string
	for _, n := range Extensions(config) {
		if !p.Has(n) {
			out = append(out, n)
		}
	}
	return out
}

// ExtensionsInJSON returns what Extensions returns for the decoded document, read from the JSON
// text without decoding it: every string value of a "name" key that is an extension name. It
// is what the translator runs on every EnvoyFilter it builds, so it does not build the document.
func ExtensionsInJSON(doc []byte) []string {
	const key = `"name"`
	var out []string
	for i := 0; ; {
		j := bytes.Index(doc[i:], []byte(key))
		if j < 0 {
			break
		}
		start := i + j
		i = start + len(key)
		if escaped(doc, start) {
			continue // the end of a string that holds `\"name`
		}
		k := skipSpace(doc, i)
		if k >= len(doc) || doc[k] != ':' {
			continue // a string value "name", not the key
		}
		k = skipSpace(doc, k+1)
		if k >= len(doc) || doc[k] != '"' {
			continue
		}
		end := k + 1
		for end < len(doc) && doc[end] != '"' {
			if doc[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(doc) {
			break
		}
		if v := doc[k+1 : end]; bytes.IndexByte(v, '\\') < 0 && isExtensionName(string(v)) && !slices.Contains(out, string(v)) {
			out = append(out, string(v))
		}
		i = end + 1
	}
	slices.Sort(out)
	return out
}

// escaped reports whether the quote at doc[i] is escaped (an odd number of backslashes before it).
func escaped(doc []byte, i int) bool {
	n := 0
	for i--; i >= 0 && doc[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	return i
}

// MissingInJSON is Missing for a JSON document.
func (p *Profile) MissingInJSON(doc []byte) []string {
	var out []string
	for _, n := range ExtensionsInJSON(doc) {
		if !p.Has(n) {
			out = append(out, n)
		}
	}
	return out
}
