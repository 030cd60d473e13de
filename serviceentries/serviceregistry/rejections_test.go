package serviceregistry

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/record"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

func rejection(registry string, i int, reason string) catalog.Rejection {
	return catalog.Rejection{Registry: registry, Item: fmt.Sprintf("/dubbo/svc/providers/bad-%d", i), Reason: reason}
}

func TestRejectionsCountEachDistinctItemOnce(t *testing.T) {
	var l rejectionLog
	for round := range 3 { // the same bad items sent again: a snapshot, a restart, a session
		for i := range 250 {
			if added := l.add(rejection("zk", i, "no port")); added != (round == 0) {
				t.Fatalf("round %d item %d: new = %v", round, i, added)
			}
		}
	}
	if got := l.get("zk"); got.Total != 250 || len(got.Latest) != keepRejections {
		t.Fatalf("total %d with %d examples, want 250 with %d", got.Total, len(got.Latest), keepRejections)
	}
	if !l.add(rejection("zk", 3, "another reason")) {
		t.Error("the same item with another reason not counted as new")
	}
	if l.add(rejection("other", 0, "no port")) != true {
		t.Error("registries share their accounts")
	}
	got := l.get("zk")
	if got.Total != 251 || got.Latest[len(got.Latest)-1].Reason != "another reason" {
		t.Errorf("total %d, newest %+v", got.Total, got.Latest[len(got.Latest)-1])
	}
	l.forget("zk")
	if got := l.get("zk"); got.Total != 0 || got.Latest != nil {
		t.Errorf("forgotten registry still has %+v", got)
	}
}

// TestRejectionEventsReportNewOnes: an Event says how many rejections are new and the total;
// nothing new, no Event.
func TestRejectionEventsReportNewOnes(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	s := &ClusterSource{Events: rec}
	obj := &unstructured.Unstructured{}
	obj.SetName("zk")
	st := supervisor.Status{Connected: true, Synced: true}
	var l rejectionLog
	for i := range 250 {
		l.add(rejection("zk", i, "no port"))
	}
	s.recordEvents(obj, st, l.get("zk"), nil, readyTrue)
	s.recordEvents(obj, st, l.get("zk"), nil, readyTrue) // nothing new
	for i := range 256 {
		l.add(rejection("zk", i, "no port"))
	}
	s.recordEvents(obj, st, l.get("zk"), nil, readyTrue)
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		if strings.Contains(e, "ItemRejected") {
			got = append(got, e)
		}
	}
	want := []string{
		"Warning ItemRejected 250 new registry item(s) rejected, 250 in total; latest /dubbo/svc/providers/bad-249: no port",
		"Warning ItemRejected 6 new registry item(s) rejected, 256 in total; latest /dubbo/svc/providers/bad-255: no port",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestConflictEventsOncePerAppearance: a conflict is reported when it appears, not again while
// it lasts, and again when it comes back after being resolved.
func TestConflictEventsOncePerAppearance(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	s := &ClusterSource{Events: rec}
	obj := &unstructured.Unstructured{}
	obj.SetName("zk")
	st := supervisor.Status{Connected: true, Synced: true}
	name := v1alpha1.Conflict{Object: "ServiceEntry mesh/a.example", Message: "the name is taken"}
	host := v1alpha1.Conflict{Object: "host b.example", Message: "defined elsewhere"}
	for _, round := range [][]v1alpha1.Conflict{{name}, {name, host}, {name, host}, {host}, {name, host}} {
		s.recordEvents(obj, st, Rejections{}, round, readyTrue)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		if strings.Contains(e, " Conflict ") {
			got = append(got, e)
		}
	}
	want := []string{
		"Warning Conflict ServiceEntry mesh/a.example: the name is taken",
		"Warning Conflict host b.example: defined elsewhere",
		"Warning Conflict ServiceEntry mesh/a.example: the name is taken",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

var readyTrue = metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonReady}
