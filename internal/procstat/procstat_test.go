package procstat

import (
	"os"
	"testing"
	"time"
)

func TestOwnProcess(t *testing.T) {
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the clock of /proc (10 ms ticks) must have moved.
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	after, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Errorf("CPU went from %v to %v over 100 ms of spinning", before, after)
	}
	rss, err := RSSMiB(os.Getpid())
	if err != nil || rss < 1 || rss > 4096 {
		t.Errorf("RSSMiB = %v, %v", rss, err)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU of no process: no error")
	}
}
