package sdk

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// Logger returns the plugin's logger. Its records are forwarded into the host's log, tagged
// with the registry's name. Configured secret values are redacted from messages and
// attributes; still, never log credentials on purpose.
func Logger() *slog.Logger { return logger }

// Redact removes the values of the registry's credentials (Config.Secrets) from text. What a
// plugin logs, reports as health or rejects is redacted already; Redact is for text that
// leaves the plugin another way, such as an error it wraps into its own message.
func Redact(text string) string { return logRedactor.Load().Redact(text) }

var (
	logRedactor atomic.Pointer[protocol.Redactor]
	logger      = slog.New(&redactingHandler{inner: newHostLogHandler(os.Stderr), r: &logRedactor})
)

// newHostLogHandler writes slog records as the JSON lines go-plugin's host parses
// (@level, @message, @timestamp), so the host can re-log them with their level and fields.
func newHostLogHandler(w io.Writer) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				// go-plugin parses exactly this layout; a record it cannot parse loses its level.
				a = slog.String("@timestamp", a.Value.Time().Format(hostTimeLayout))
			case slog.LevelKey:
				a = slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				a.Key = "@message"
			}
			return a
		},
	})
}

// hostTimeLayout is the timestamp layout go-plugin's host accepts.
const hostTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// redactingHandler removes secret values from records before they are written.
type redactingHandler struct {
	inner slog.Handler
	r     *atomic.Pointer[protocol.Redactor]
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	r := h.r.Load()
	if r.Empty() {
		return h.inner.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(r, a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	r := h.r.Load()
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = redactAttr(r, a)
	}
	return &redactingHandler{inner: h.inner.WithAttrs(out), r: h.r}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{inner: h.inner.WithGroup(name), r: h.r}
}

// redactAttr redacts string-valued attributes (errors and Stringers included) and groups.
func redactAttr(r *protocol.Redactor, a slog.Attr) slog.Attr {
	if r.Empty() {
		return a
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		out := make([]any, len(group))
		for i, g := range group {
			out[i] = redactAttr(r, g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, r.Redact(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, r.Redact(x.String()))
		}
	}
	return a
}
