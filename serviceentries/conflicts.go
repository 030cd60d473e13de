package serviceentries

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// Conflicts returns what keeps registry's services from being published as Meltemi wants —
// names its objects need held by objects Meltemi does not own, and hosts those define too —
// each with what the user should do.
func Conflicts(registry string, names []synckube.NameConflict, hosts []HostConflict) []v1alpha1.Conflict {
	var out []v1alpha1.Conflict
	for _, n := range names {
		if !slices.Contains(n.Registries, registry) {
			continue
		}
		out = append(out, v1alpha1.Conflict{
			Object: fmt.Sprintf("%s %s/%s", n.Kind, n.Namespace, n.Name),
			Message: fmt.Sprintf("the name is taken by a %s Meltemi does not manage (no label %s=%s), so this registry's %s is not written; "+
				"delete that object, or label it to hand it over to Meltemi", n.Kind, v1alpha1.LabelManagedBy, v1alpha1.ManagedByValue, n.Kind),
		})
	}
	for _, h := range hosts {
		if !slices.Contains(h.Registries, registry) {
			continue
		}
		c := v1alpha1.Conflict{Object: "host " + h.Host}
		foreign := strings.Join(h.Foreign, ", ")
		if h.Withheld {
			c.Message = fmt.Sprintf("ServiceEntries Meltemi does not manage define this host (%s), so Meltemi does not write it; "+
				"delete them to hand the host over", foreign)
		} else {
			c.Message = fmt.Sprintf("ServiceEntries Meltemi does not manage define this host too (%s); Istio merges them and may "+
				"serve the wrong endpoints: delete them", foreign)
		}
		out = append(out, c)
	}
	return out
}
