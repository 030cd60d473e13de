package host

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogAdapter lets go-plugin log through the host's slog logger, so plugin output (which
// go-plugin parses from the plugin's JSON stderr) lands in the host's structured log with
// its level and fields.
type slogAdapter struct {
	l       *slog.Logger
	name    string
	implied []any
}

func newHCLogAdapter(l *slog.Logger) hclog.Logger { return &slogAdapter{l: l} }

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
	a.l.Log(context.Background(), toSlogLevel(level), msg, args...)
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
	return &slogAdapter{l: a.l.With(args...), name: a.name, implied: append(append([]any(nil), a.implied...), args...)}
}
func (a *slogAdapter) Name() string { return a.name }
func (a *slogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}
func (a *slogAdapter) ResetNamed(name string) hclog.Logger {
	return &slogAdapter{l: a.l.With("component", name), name: name, implied: a.implied}
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
