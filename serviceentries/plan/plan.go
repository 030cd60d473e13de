// Package plan decides what happens to one changed host, as a pure function over a small
// read-only view of the world: write its objects, remove them, withhold the host (only foreign
// ServiceEntries define it), or wait (the entry in the cluster merges a registry that has not
// synced, and writing now would drop that registry's endpoints). The ServiceEntry controller
// runs store → coalesce → Decide → write; this package holds the rules, table-tested, as
// external-dns's plan holds its policies.
package plan

import "slices"

// Action is what the controller does with a host.
type Action int

const (
	// Write hands the host's converted objects to the writer.
	Write Action = iota
	// Remove empties the host's group: no registry has an instance of it any more.
	Remove
	// Withhold writes nothing: only ServiceEntries Meltemi does not own define the host, and
	// Istio would merge a second definition with theirs.
	Withhold
	// Wait writes nothing yet: the host's entry in the cluster names a registry that has not
	// synced and from which the store has nothing for the host.
	Wait
)

func (a Action) String() string {
	switch a {
	case Write:
		return "write"
	case Remove:
		return "remove"
	case Withhold:
		return "withhold"
	case Wait:
		return "wait"
	}
	return "unknown"
}

// View is what a decision reads about a host. Implementations only read.
type View interface {
	// Definitions returns the foreign ServiceEntries ("namespace/name") defining host and
	// whether one of Meltemi's does.
	Definitions(host string) (foreign []string, owned bool)
	// LiveRegistries returns the registries that Meltemi's entry for host in the cluster names
	// (none when there is no such entry).
	LiveRegistries(host string) []string
	// Pending reports whether registry has not yet handed over a complete snapshot.
	Pending(registry string) bool
}

// Host is a changed host as the store and the conversion see it.
type Host struct {
	Name string
	// Desired: the conversion produced objects (some registry has instances of the host).
	Desired bool
	// Registries the store has services of the host from.
	Registries []string
}

// Decision is what to do with a host, and why.
type Decision struct {
	Action Action
	// Foreign lists the foreign ServiceEntries defining the host: the reason for Withhold; with
	// Write or Wait they define it next to Meltemi's entry (Istio merges them: a duplicate to
	// report).
	Foreign []string
	// WaitFor is the pending registry a Wait waits for.
	WaitFor string
}

// Decide returns what to do with host h. A host with nothing desired is removed whatever
// defines it: Meltemi only ever removes its own objects. Otherwise foreign definitions come
// first (a withheld host is not Meltemi's to write at all), then pending registries.
func Decide(h Host, v View) Decision {
	if !h.Desired {
		return Decision{Action: Remove}
	}
	foreign, owned := v.Definitions(h.Name)
	if len(foreign) > 0 && !owned {
		return Decision{Action: Withhold, Foreign: foreign}
	}
	for _, reg := range v.LiveRegistries(h.Name) {
		if v.Pending(reg) && !slices.Contains(h.Registries, reg) {
			return Decision{Action: Wait, Foreign: foreign, WaitFor: reg}
		}
	}
	return Decision{Action: Write, Foreign: foreign}
}
