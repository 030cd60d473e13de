package supervisor

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"

	"github.com/meltemi-mesh/meltemi/plugins/protocol"
)

// slogAdapter lets go-plugin log through the host's slog logger, so plugin output (which
// go-plugin parses from the plugin's JSON stderr) lands in the host's structured log with
// its level and fields, tagged with the registry (the logger's own attributes) and the
// plugin binary. Secret values are redacted from messages and string fields.
type slogAdapter struct {
	l       *slog.Logger
	plugin  string
	redact  *protocol.Redactor
	implied []any
}

func newHCLogAdapter(l *slog.Logger, plugin string, r *protocol.Redactor) hclog.Logger {
	return &slogAdapter{l: l, plugin: plugin, redact: r}
}

func toSlogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *slogAdapter) Log(level hclog.Level, msg string, args ...any) {
	ctx := context.Background()
	lv := toSlogLevel(level)
	if !a.l.Enabled(ctx, lv) {
		return
	}
	if !a.redact.Empty() {
		msg = a.redact.Redact(msg)
		args = append([]any(nil), args...)
		for i, v := range args {
			switch x := v.(type) {
			case string:
				args[i] = a.redact.Redact(x)
			case error:
				args[i] = a.redact.Redact(x.Error())
			case fmt.Stringer:
				args[i] = a.redact.Redact(x.String())
			}
		}
	}
	a.l.Log(ctx, lv, msg, args...)
}
func (a *slogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *slogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *slogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *slogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *slogAdapter) enabled(level hclog.Level) bool {
	return a.l.Enabled(context.Background(), toSlogLevel(level))
}
func (a *slogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *slogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *slogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *slogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *slogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *slogAdapter) ImpliedArgs() []any { return a.implied }
func (a *slogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.l = a.l.With(args...)
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}
func (a *slogAdapter) Name() string { return a.plugin }

// Named is how go-plugin marks the plugin's own output (it names the logger after the
// executable, which here may be a /proc/self/fd path): it gets the plugin binary's name.
func (a *slogAdapter) Named(string) hclog.Logger { return a.ResetNamed("") }
func (a *slogAdapter) ResetNamed(string) hclog.Logger {
	c := *a
	c.l = a.l.With("plugin", a.plugin)
	return &c
}
func (a *slogAdapter) SetLevel(hclog.Level) {}
func (a *slogAdapter) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.enabled(lv) {
			return lv
		}
	}
	return hclog.Off
}
func (a *slogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}
func (a *slogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}
