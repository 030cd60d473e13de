package protocol

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Redacted replaces secret values in text.
const Redacted = "[redacted]"

// minSecretLen is the shortest value that is redacted: shorter ones would mangle ordinary
// text everywhere and protect next to nothing.
const minSecretLen = 3

// Redactor removes secret values from text that leaves a component: errors, health
// messages, rejections and logs. Both sides use it: the SDK before anything reaches the
// wire, the host again before anything reaches its logs, metrics or status. A nil or empty
// Redactor returns text unchanged.
type Redactor struct {
	// forms holds every secret in the forms it may appear in text (as is, quoted as Go's %q
	// does, URL-encoded), longest first so that a secret containing another is replaced whole.
	forms []string
}

// NewRedactor returns a redactor for the values of secrets.
func NewRedactor(secrets map[string]string) *Redactor {
	r := &Redactor{}
	seen := map[string]bool{}
	for _, v := range secrets {
		if len(v) < minSecretLen {
			continue
		}
		quoted := strconv.Quote(v)
		for _, f := range []string{v, quoted[1 : len(quoted)-1], url.QueryEscape(v), url.PathEscape(v)} {
			if !seen[f] {
				seen[f] = true
				r.forms = append(r.forms, f)
			}
		}
	}
	slices.SortFunc(r.forms, func(a, b string) int { return len(b) - len(a) })
	return r
}

// Redact returns text with every secret replaced by [redacted].
func (r *Redactor) Redact(text string) string {
	if r == nil {
		return text
	}
	for _, f := range r.forms {
		if strings.Contains(text, f) {
			text = strings.ReplaceAll(text, f, Redacted)
		}
	}
	return text
}

// Empty reports whether there is nothing to redact.
func (r *Redactor) Empty() bool { return r == nil || len(r.forms) == 0 }
