package serviceregistry

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

func TestConditions(t *testing.T) {
	healthy := supervisor.Status{PluginRunning: true, Connected: true, Synced: true}
	type want struct{ ready, connected, synced, readyReason, readyMessage string }
	for _, tc := range []struct {
		name string
		rs   registryState
		want want
	}{
		{"healthy", registryState{running: true, st: healthy},
			want{"True", "True", "True", ReasonReady, "connected and synced"}},
		{"connected, no snapshot yet", registryState{running: true, st: supervisor.Status{PluginRunning: true, Connected: true}},
			want{"False", "True", "False", ReasonWaitingForSnapshot, "waiting for the first complete snapshot"}},
		{"unreachable", registryState{running: true, st: supervisor.Status{PluginRunning: true, Message: "dial tcp 10.0.0.1:2181: connection refused"}},
			want{"False", "False", "False", ReasonRegistryUnreachable, "connection refused"}},
		{"missing plugin", registryState{running: true, st: supervisor.Status{Failure: supervisor.ReasonStartFailed, Message: `no plugin for registry kind "zk"`}},
			want{"False", "False", "False", ReasonPluginStartFailed, "no plugin for registry kind"}},
		{"invalid options", registryState{running: true, st: supervisor.Status{Failure: supervisor.ReasonConfigureFailed, Message: "option roots: unknown"}},
			want{"False", "False", "False", ReasonInvalidOptions, "option roots"}},
		{"plugin crashed after syncing", registryState{running: true, st: supervisor.Status{Synced: true, Failure: supervisor.ReasonExited, Message: "exit status 2"}},
			want{"False", "False", "True", ReasonPluginExited, "exit status 2"}},
		{"invalid spec, never ran", registryState{generation: 3, configErr: errors.New(`Secret "zk-creds" not found`)},
			want{"False", "False", "False", ReasonInvalidConfiguration, `spec generation 3 cannot be used: Secret "zk-creds" not found`}},
		{"invalid new spec, previous one served", registryState{generation: 4, running: true, st: healthy, configErr: errors.New("bad")},
			want{"False", "True", "True", ReasonInvalidConfiguration, "the previous configuration is still served"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := conditions(nil, tc.rs)
			status := func(typ string) string {
				c := meta.FindStatusCondition(got, typ)
				if c == nil {
					t.Fatalf("no %s condition in %+v", typ, got)
				}
				if c.ObservedGeneration != tc.rs.generation || c.Reason == "" || c.Message == "" {
					t.Errorf("%s condition %+v: want observedGeneration %d, a reason and a message", typ, c, tc.rs.generation)
				}
				return string(c.Status)
			}
			if r, c, s := status(v1alpha1.ConditionReady), status(v1alpha1.ConditionConnected), status(v1alpha1.ConditionSynced); r != tc.want.ready || c != tc.want.connected || s != tc.want.synced {
				t.Errorf("Ready/Connected/Synced = %s/%s/%s, want %s/%s/%s", r, c, s, tc.want.ready, tc.want.connected, tc.want.synced)
			}
			ready := meta.FindStatusCondition(got, v1alpha1.ConditionReady)
			if ready.Reason != tc.want.readyReason || !strings.Contains(ready.Message, tc.want.readyMessage) {
				t.Errorf("Ready reason %q message %q, want %q containing %q", ready.Reason, ready.Message, tc.want.readyReason, tc.want.readyMessage)
			}
		})
	}
}

// TestConditionsKeepTransitionTimes: a condition that keeps its status keeps its
// lastTransitionTime; one that changes gets a new one.
func TestConditionsKeepTransitionTimes(t *testing.T) {
	past := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	first := conditions(nil, registryState{running: true, st: supervisor.Status{PluginRunning: true, Connected: true}})
	for i := range first {
		first[i].LastTransitionTime = past
	}
	next := conditions(first, registryState{running: true, st: supervisor.Status{PluginRunning: true, Connected: true, Synced: true}})
	if c := meta.FindStatusCondition(next, v1alpha1.ConditionConnected); !c.LastTransitionTime.Equal(&past) {
		t.Errorf("Connected stayed True but its lastTransitionTime changed to %v", c.LastTransitionTime)
	}
	if c := meta.FindStatusCondition(next, v1alpha1.ConditionSynced); c.LastTransitionTime.Equal(&past) {
		t.Error("Synced became True but kept its old lastTransitionTime")
	}
}
