package nacos

import (
	"fmt"
	"slices"
	"strings"
)

// groupSet is the groups imported from one namespace: a list, or all of them.
type groupSet struct {
	all   bool
	names []string // sorted; empty when all
}

func (g groupSet) String() string {
	if g.all {
		return allSelector
	}
	return strings.Join(g.names, ",")
}

// selection says which namespaces and groups are imported.
type selection struct {
	// named are the namespaces listed by ID, with their groups, sorted by ID.
	named []namespaceGroups
	// all imports every namespace; those not in named get defaults.
	all      bool
	defaults groupSet
}

type namespaceGroups struct {
	id     string
	groups groupSet
}

// groupsFor returns the groups to import from namespace ns; ok is false when ns is not
// selected.
func (s selection) groupsFor(ns string) (g groupSet, ok bool) {
	if i, found := slices.BinarySearchFunc(s.named, ns, func(n namespaceGroups, id string) int { return strings.Compare(n.id, id) }); found {
		return s.named[i].groups, true
	}
	return s.defaults, s.all
}

// namedIDs returns the namespaces named explicitly.
func (s selection) namedIDs() []string {
	out := make([]string, len(s.named))
	for i, n := range s.named {
		out[i] = n.id
	}
	return out
}

// needsConsole reports whether the selection needs Nacos's console API, which lists
// namespaces and the services of every group.
func (s selection) needsConsole() bool {
	if s.all {
		return true
	}
	for _, n := range s.named {
		if n.groups.all {
			return true
		}
	}
	return false
}

// selectionError is a problem with one of the selection options.
type selectionError struct{ field, msg string }

func (e selectionError) Error() string { return e.msg }

// parseSelection reads the namespaces option ("ns1,ns2", "*", "ns1:g1,g2;ns2", …) and the
// default groups.
func parseSelection(namespaces string, groups []string) (selection, error) {
	var sel selection
	base, err := parseGroups(groups)
	if err != nil {
		return sel, selectionError{optGroups, err.Error()}
	}
	seen := map[string]bool{}
	add := func(id string, g groupSet) error {
		if id == allSelector {
			if sel.all {
				return fmt.Errorf("%q is given twice", allSelector)
			}
			sel.all, sel.defaults = true, g
			return nil
		}
		if err := validName(id, false); err != nil {
			return fmt.Errorf("namespace %q %v", id, err)
		}
		if seen[id] {
			return fmt.Errorf("namespace %q is given twice", id)
		}
		seen[id] = true
		sel.named = append(sel.named, namespaceGroups{id: id, groups: g})
		return nil
	}
	for entry := range strings.SplitSeq(namespaces, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		ns, groupText, hasGroups := strings.Cut(entry, ":")
		if !hasGroups {
			for id := range strings.SplitSeq(entry, ",") {
				if id = strings.TrimSpace(id); id != "" {
					if err := add(id, base); err != nil {
						return sel, selectionError{optNamespaces, err.Error()}
					}
				}
			}
			continue
		}
		var names []string
		for g := range strings.SplitSeq(groupText, ",") {
			if g = strings.TrimSpace(g); g != "" {
				names = append(names, g)
			}
		}
		g, err := parseGroups(names)
		if err == nil {
			err = add(strings.TrimSpace(ns), g)
		}
		if err != nil {
			return sel, selectionError{optNamespaces, fmt.Sprintf("entry %q: %v", entry, err)}
		}
	}
	if !sel.all && len(sel.named) == 0 {
		return sel, selectionError{optNamespaces, "selects no namespace; use \"public\" for the default namespace or \"*\" for all"}
	}
	slices.SortFunc(sel.named, func(a, b namespaceGroups) int { return strings.Compare(a.id, b.id) })
	return sel, nil
}

func parseGroups(names []string) (groupSet, error) {
	var g groupSet
	for _, n := range names {
		if n == allSelector {
			g.all = true
			continue
		}
		if err := validName(n, true); err != nil {
			return g, fmt.Errorf("group %q %v", n, err)
		}
		if !slices.Contains(g.names, n) {
			g.names = append(g.names, n)
		}
	}
	if g.all {
		g.names = nil
	} else if len(g.names) == 0 {
		return g, fmt.Errorf("no group given; use %s for the default group or %q for all", defaultGroup, allSelector)
	}
	slices.Sort(g.names)
	return g, nil
}

// validName checks a namespace ID or group name against what Nacos accepts.
func validName(s string, group bool) error {
	if len(s) > 128 {
		return fmt.Errorf("is longer than 128 characters")
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' ||
			group && (r == '.' || r == ':')
		if !ok {
			return fmt.Errorf("has the character %q, which Nacos does not allow", r)
		}
	}
	return nil
}
