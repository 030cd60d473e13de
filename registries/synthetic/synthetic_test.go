package synthetic

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

func TestStateIsDeterministic(t *testing.T) {
	opts := map[string]string{"services": "3", "instancesPerService": "2"}
	s, err := State("r", opts, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, svc := range s {
		for _, in := range svc.Instances {
			got = append(got, fmt.Sprintf("%s %s %s:%d %v", svc.Key, svc.Host, in.Address, in.Port, in.Labels))
		}
	}
	want := []string{
		"svc-00000 svc-00000.synthetic.local 10.0.0.1:20880 map[rev:0 version:1.0.0]",
		"svc-00000 svc-00000.synthetic.local 10.0.0.2:20880 map[rev:0 version:1.0.0]",
		"svc-00001 svc-00001.synthetic.local 10.0.0.3:20880 map[rev:0 version:1.0.0]",
		"svc-00001 svc-00001.synthetic.local 10.0.0.4:20880 map[rev:0 version:1.0.0]",
		"svc-00002 svc-00002.synthetic.local 10.0.0.5:20880 map[rev:0 version:1.0.0]",
		"svc-00002 svc-00002.synthetic.local 10.0.0.6:20880 map[rev:0 version:1.0.0]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("state\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Churn k touches service k%3, instance (k/3)%2: after 4 changes svc-00000 has rev 1 and 4.
	s, _ = State("r", opts, 4)
	if l := s[0].Instances; l[0].Labels["rev"] != "1" || l[1].Labels["rev"] != "4" || s[1].Instances[0].Labels["rev"] != "2" {
		t.Errorf("after churn: %+v", s)
	}
}

func TestGarbage(t *testing.T) {
	s, err := State("r", map[string]string{"services": "6", "instancesPerService": "1", "garbageEvery": "2"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]string, len(s))
	for i, svc := range s {
		hosts[i] = fmt.Sprintf("%s/%d", svc.Host, len(svc.Instances))
	}
	want := "svc-00000.synthetic.local/1 svc-00001.synthetic.local/5 svc-00002.synthetic.local/1 /5 svc-00004.synthetic.local/1 Not_A:Host.svc-00005.synthetic.local/5"
	if strings.Join(hosts, " ") != want {
		t.Errorf("hosts %q, want %q", strings.Join(hosts, " "), want)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	err := New().Configure(context.Background(), sdk.Config{Options: map[string]string{
		"services": "-2", "churnEvents": "x", "domain": "Bad_Domain", "crashAfter": "soon", "instancesPerService": "1",
	}})
	for _, want := range []string{"services: -2 is negative", `churnEvents: "x" is not an integer`, "domain:", `crashAfter: "soon" is not a duration`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if err := New().Configure(context.Background(), sdk.Config{Options: map[string]string{"services": "100000", "instancesPerService": "1000"}}); err == nil {
		t.Errorf("100,000,000 instances accepted")
	}
}

func TestWatchChurnsThenCloses(t *testing.T) {
	p := New()
	if err := p.Configure(context.Background(), sdk.Config{Options: map[string]string{
		"services": "4", "churnEvents": "100", "closeAfter": "200ms", "echoSecret": "true"}, Secrets: map[string]string{"token": "tok"}}); err != nil {
		t.Fatal(err)
	}
	rec := sdktest.NewRecorder(false)
	err := p.Watch(context.Background(), rec)
	if err == nil || !strings.Contains(err.Error(), "closing its stream after 200ms") {
		t.Errorf("watch ended with %v", err)
	}
	var events []string
	for _, ev := range rec.Events(0) {
		if ev.Kind != sdktest.Upsert {
			events = append(events, ev.String())
		}
	}
	want := `reject token tok: echoed token tok|health true "synthetic registry connected with token tok"|snapshot (4 services)`
	if got, upserts := strings.Join(events, "|"), rec.Count(0, sdktest.Upsert); got != want || upserts != 100 {
		t.Errorf("events %q and %d upserts, want %q and 100", got, upserts, want)
	}
}

func TestChurnWaitsForStartFileAndStampsChanges(t *testing.T) {
	start := filepath.Join(t.TempDir(), "go")
	p := New()
	if err := p.Configure(context.Background(), sdk.Config{Options: map[string]string{
		"services": "2", "instancesPerService": "2", "churnEvents": "3", "churnStartFile": start, "stampChanges": "true", "closeAfter": "300ms"}}); err != nil {
		t.Fatal(err)
	}
	rec := sdktest.NewRecorder(false)
	done := make(chan error, 1)
	go func() { done <- p.Watch(context.Background(), rec) }()
	time.Sleep(100 * time.Millisecond)
	if early := rec.Count(0, sdktest.Upsert); early != 0 {
		t.Fatalf("%d changes before the start file exists", early)
	}
	before := time.Now()
	if err := os.WriteFile(start, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	<-done
	var changes []catalog.Service
	for _, ev := range rec.Events(0) {
		if ev.Kind == sdktest.Upsert {
			changes = append(changes, ev.Service)
		}
	}
	if len(changes) != 3 {
		t.Fatalf("%d changes, want 3", len(changes))
	}
	for k, svc := range changes {
		in := svc.Instances[(k/2)%2]
		ns, err := strconv.ParseInt(in.Labels[LabelChangedAt], 10, 64)
		if err != nil || time.Unix(0, ns).Before(before) || time.Unix(0, ns).After(time.Now()) {
			t.Errorf("change %d: stamp %q, want a time after the start file appeared", k, in.Labels[LabelChangedAt])
		}
		if _, dropped := catalog.FilterLabels(in.Labels); len(dropped) > 0 {
			t.Errorf("stamped labels dropped by the host's validation: %v", dropped)
		}
	}
}
