// Package hosttemplate gives registry plugins one way to name hosts: a text/template over a
// plugin's variables, its output sanitised into a DNS name.
package hosttemplate

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// MaxOutput bounds a rendered host before sanitising; a DNS name is at most 253.
const MaxOutput = 1024

// Template renders service hosts from a text/template and sanitises them into DNS names.
type Template struct {
	tmpl *template.Template
}

// Parse parses text (named name in errors) and checks that it gives a valid host
// for sample, so that references to unknown fields and templates that cannot give a DNS name
// fail at configuration rather than for every service later.
func Parse(name, text string, sample any) (*Template, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("is empty")
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	h := &Template{tmpl: t}
	if _, err := h.Render(sample); err != nil {
		return nil, fmt.Errorf("gives no valid host for %+v: %w", sample, err)
	}
	return h, nil
}

// Render executes the template with vars and sanitises its output into a DNS-1123 subdomain.
func (h *Template) Render(vars any) (string, error) {
	var b limitedBuilder
	if err := h.tmpl.Execute(&b, vars); err != nil {
		if b.full {
			return "", fmt.Errorf("host template output is longer than %d bytes", MaxOutput)
		}
		return "", fmt.Errorf("executing host template: %w", err)
	}
	return Sanitize(b.String())
}

// Sanitize lower-cases s and turns it into a DNS-1123 subdomain: every character other
// than a-z, 0-9, '-' and '.' becomes '-', and hyphens at the start or end of a label are
// removed. Structure is never repaired, since a repair could give two services one host: an
// empty label (as in "a..b" or ".svc"), a label over 63 characters or a name over 253
// characters is an error.
func Sanitize(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, ".") // a fully qualified name's final dot
	if s == "" {
		return "", errors.New("host template gave an empty host")
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	labels := strings.Split(b.String(), ".")
	for i, l := range labels {
		l = strings.Trim(l, "-")
		switch {
		case l == "":
			return "", fmt.Errorf("host %s has an empty DNS label", catalog.Quote(s, 80))
		case len(l) > 63:
			return "", fmt.Errorf("host %s has a DNS label longer than 63 characters", catalog.Quote(s, 80))
		}
		labels[i] = l
	}
	host := strings.Join(labels, ".")
	if err := catalog.ValidateHost(host); err != nil {
		return "", fmt.Errorf("host %s: %v", catalog.Quote(host, 80), err)
	}
	return host, nil
}

// limitedBuilder collects template output up to MaxOutput bytes.
type limitedBuilder struct {
	strings.Builder
	full bool
}

func (b *limitedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxOutput {
		b.full = true
		return 0, errors.New("output too long")
	}
	return b.Builder.Write(p)
}
