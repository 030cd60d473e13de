package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCommandLine: help on every level goes to stdout without error (exit 0); usage errors
// name the flag, argument or command that was wrong and show the usage; a bare meltemi
// shows help instead of starting the server.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // "" means success
		want    string // in stdout on success, in stderr on error
	}{
		{"bare", nil, "", "Available Commands:"},
		{"-h", []string{"-h"}, "", "Available Commands:"},
		{"--help", []string{"--help"}, "", "completion"},
		{"help", []string{"help"}, "", "Available Commands:"},
		{"help run", []string{"help", "run"}, "", "--first-sync-timeout"},
		{"run -h", []string{"run", "-h"}, "", "--first-sync-timeout"},
		{"run --help lists traffic flags", []string{"run", "--help"}, "", "--xds-listen"},
		{"version -h", []string{"version", "-h"}, "", "plugin protocol"},
		{"plugins", []string{"plugins"}, "", "describe"},
		{"plugins -h", []string{"plugins", "-h"}, "", "list"},
		{"plugins list -h", []string{"plugins", "list", "-h"}, "", "--plugin-dir"},
		{"plugins describe -h", []string{"plugins", "describe", "-h"}, "", "describe KIND"},
		{"convert -h", []string{"convert", "-h"}, "", "--kubeconfig"},
		{"convert -h shorthand", []string{"convert", "-h"}, "", "-o, --output"},
		{"routes explain -h", []string{"routes", "explain", "-h"}, "", "--attr"},
		{"migrate check -h", []string{"migrate", "check", "-h"}, "", "--envoyfilter-namespace"},
		{"completion bash", []string{"completion", "bash"}, "", "__start_meltemi"},
		{"completion zsh", []string{"completion", "zsh"}, "", "#compdef meltemi"},
		{"completion fish", []string{"completion", "fish"}, "", "complete -c meltemi"},

		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate" for "meltemi"`, "Usage:"},
		{"unknown subcommand", []string{"plugins", "frob"}, `unknown command "frob" for "meltemi plugins"`, "Usage:"},
		{"unknown flag", []string{"run", "--no-such-flag"}, "unknown flag: --no-such-flag", "--first-sync-timeout"},
		{"bad flag value", []string{"run", "--workers", "many"}, `invalid argument "many" for "--workers"`, "Usage:"},
		{"bad duration", []string{"run", "--write-window", "soon"}, `"--write-window"`, "Usage:"},
		{"run takes no arguments", []string{"run", "extra"}, `unknown command "extra" for "meltemi run"`, "Usage:"},
		{"bad log level", []string{"run", "--log-level", "loud", "--kubeconfig", "/nonexistent"}, "--log-level", ""},
		{"convert without --config", []string{"convert"}, `required flag(s) "config" not set`, "--config"},
		{"convert -o xml", []string{"convert", "--config", "x.yaml", "-o", "xml"}, "--output must be yaml or json", ""},
		{"describe without a kind", []string{"plugins", "describe"}, "accepts 1 arg(s), received 0", "Usage:"},
		{"explain without --port", []string{"routes", "explain", "--host", "h"}, `required flag(s) "port" not set`, "Usage:"},
		{"explain with a port too big", []string{"routes", "explain", "--host", "h", "--port", "70000"}, `"--port"`, "Usage:"},
		{"explain with a bad attribute", []string{"routes", "explain", "--host", "h", "--port", "1", "--attr", "novalue"}, `want NAME=VALUE, not "novalue"`, "Usage:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := execute(context.Background(), tc.args, &stdout, &stderr)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v, want none\nstderr:\n%s", err, stderr.String())
				}
				if !strings.Contains(stdout.String(), tc.want) {
					t.Errorf("stdout lacks %q:\n%s", tc.want, stdout.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("a failed command printed to stdout:\n%s", stdout.String())
			}
		})
	}
}
