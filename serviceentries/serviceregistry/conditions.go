package serviceregistry

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// Condition reasons of a ServiceRegistry.
const (
	ReasonReady                = "Ready"
	ReasonConnected            = "Connected"
	ReasonSnapshotReceived     = "SnapshotReceived"
	ReasonWaitingForSnapshot   = "WaitingForSnapshot"
	ReasonInvalidConfiguration = "InvalidConfiguration"
	ReasonPluginStarting       = "PluginStarting"
	ReasonPluginStartFailed    = "PluginStartFailed"
	ReasonInvalidOptions       = "InvalidOptions"
	ReasonPluginHung           = "PluginHung"
	ReasonPluginExited         = "PluginExited"
	ReasonRegistryUnreachable  = "RegistryUnreachable"
)

// failureReasons maps why a plugin's run ended to the condition reason.
var failureReasons = map[string]string{
	supervisor.ReasonStartFailed:     ReasonPluginStartFailed,
	supervisor.ReasonConfigureFailed: ReasonInvalidOptions,
	supervisor.ReasonHung:            ReasonPluginHung,
	supervisor.ReasonExited:          ReasonPluginExited,
	supervisor.ReasonStreamEnded:     ReasonPluginExited,
}

// registryState is what the conditions of one ServiceRegistry are computed from.
type registryState struct {
	generation int64
	// running: a plugin is supervised for it (its current or a previous valid spec); st is
	// then its supervisor's status.
	running bool
	st      supervisor.Status
	// configErr says why the current spec cannot be used; nil when it can.
	configErr error
}

// conditions returns current updated to the registry's state: Ready, Connected and Synced,
// each with a reason and message, lastTransitionTime kept while the status stays.
func conditions(current []metav1.Condition, rs registryState) []metav1.Condition {
	out := slices.Clone(current)
	set := func(typ string, ok bool, reason, message string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&out, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: rs.generation})
	}
	st := rs.st
	connReason, connMsg := ReasonConnected, "the plugin runs and reaches the registry"
	switch {
	case !rs.running && rs.configErr != nil:
		connReason, connMsg = ReasonInvalidConfiguration, "no plugin runs: the spec cannot be used"
	case !rs.running:
		connReason, connMsg = ReasonPluginStarting, "the plugin is being started"
	case st.Connected:
	case !st.PluginRunning && st.Failure != "":
		connReason, connMsg = failureReasons[st.Failure], st.Message
		if connReason == "" {
			connReason = ReasonPluginExited
		}
	case !st.PluginRunning:
		connReason, connMsg = ReasonPluginStarting, "the plugin is being started"
	default:
		connReason, connMsg = ReasonRegistryUnreachable, st.Message
	}
	if connMsg == "" {
		connMsg = "the registry does not answer"
	}
	connected := rs.running && st.Connected
	set(v1alpha1.ConditionConnected, connected, connReason, connMsg)

	synced := rs.running && st.Synced
	if synced {
		set(v1alpha1.ConditionSynced, true, ReasonSnapshotReceived, "services are published from the last complete snapshot")
	} else {
		set(v1alpha1.ConditionSynced, false, ReasonWaitingForSnapshot, "no complete snapshot yet; the objects this registry contributes to are not deleted meanwhile")
	}

	switch {
	case rs.configErr != nil:
		msg := fmt.Sprintf("spec generation %d cannot be used: %v", rs.generation, rs.configErr)
		if rs.running {
			msg += "; the previous configuration is still served"
		}
		set(v1alpha1.ConditionReady, false, ReasonInvalidConfiguration, msg)
	case !connected:
		set(v1alpha1.ConditionReady, false, connReason, connMsg)
	case !synced:
		set(v1alpha1.ConditionReady, false, ReasonWaitingForSnapshot, "connected; waiting for the first complete snapshot")
	default:
		set(v1alpha1.ConditionReady, true, ReasonReady, "connected and synced")
	}
	return out
}
