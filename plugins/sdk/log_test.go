package sdk

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

func TestLogRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	var r atomic.Pointer[protocol.Redactor]
	log := slog.New(&redactingHandler{inner: newHostLogHandler(&buf), r: &r})
	log.Info("before configure pw=hunter22")
	r.Store(protocol.NewRedactor(map[string]string{"password": "hunter22"}))
	log.With("bound", "user:hunter22").WithGroup("g").Info("login with hunter22",
		"err", errors.New("auth hunter22 refused"), "n", 3, slog.Group("inner", "v", "x-hunter22"))
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "pw=hunter22") {
		t.Fatalf("log %q", out)
	}
	if strings.Contains(lines[1], "hunter22") {
		t.Errorf("secret logged: %s", lines[1])
	}
	for _, want := range []string{`"@message":"login with [redacted]"`, `"bound":"user:[redacted]"`, `"err":"auth [redacted] refused"`, `"n":3`, `"v":"x-[redacted]"`, `"@level":"info"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("log line lacks %s: %s", want, lines[1])
		}
	}
}

func TestLogTimestampIsWhatTheHostParses(t *testing.T) {
	var buf bytes.Buffer
	slog.New(newHostLogHandler(&buf)).Warn("x")
	i := strings.Index(buf.String(), `"@timestamp":"`)
	if i < 0 {
		t.Fatalf("no timestamp: %s", buf.String())
	}
	ts := buf.String()[i+len(`"@timestamp":"`):]
	ts = ts[:strings.IndexByte(ts, '"')]
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil {
		t.Errorf("timestamp %q does not parse as go-plugin expects: %v", ts, err)
	}
}
