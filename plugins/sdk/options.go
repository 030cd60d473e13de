package sdk

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options reads a Config's options typed, against the Description's option list, and
// collects one FieldError per bad field so that users see every problem at once.
//
//	o := sdk.NewOptions(desc.Options, cfg)
//	root := o.String("root")
//	timeout := o.Duration("sessionTimeout")
//	if err := o.Err(); err != nil { return err }
type Options struct {
	specs  map[string]Option
	values map[string]string
	errs   FieldErrors
}

// NewOptions checks cfg's options against specs: unknown options and missing required ones
// are reported. Secret options are read from cfg.Secrets.
func NewOptions(specs []Option, cfg Config) *Options {
	o := &Options{specs: map[string]Option{}, values: map[string]string{}}
	for _, s := range specs {
		o.specs[s.Name] = s
	}
	for k, v := range cfg.Options {
		s, ok := o.specs[k]
		switch {
		case !ok:
			o.errs = append(o.errs, FieldError{k, "unknown option; known: " + strings.Join(names(specs), ", ")})
		case s.Secret:
			o.errs = append(o.errs, FieldError{k, "is a secret: pass it by Secret reference, not as a plain option"})
		default:
			o.values[k] = v
		}
	}
	for k, v := range cfg.Secrets {
		if s, ok := o.specs[k]; ok && s.Secret {
			o.values[k] = v
		}
	}
	for _, s := range specs {
		if _, ok := o.values[s.Name]; !ok && s.Required && s.Default == "" {
			o.errs = append(o.errs, FieldError{s.Name, "is required"})
		}
	}
	return o
}

func names(specs []Option) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	slices.Sort(out)
	return out
}

func (o *Options) raw(name string) string {
	if v, ok := o.values[name]; ok {
		return v
	}
	return o.specs[name].Default
}

// String returns an option's value or its default.
func (o *Options) String(name string) string { return strings.TrimSpace(o.raw(name)) }

// Int returns an integer option; a bad value is recorded as a field error.
func (o *Options) Int(name string) int {
	v := o.String(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		o.Fail(name, fmt.Sprintf("%q is not an integer", v))
	}
	return n
}

// Bool returns a boolean option; a bad value is recorded as a field error.
func (o *Options) Bool(name string) bool {
	v := o.String(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		o.Fail(name, fmt.Sprintf("%q is not true or false", v))
	}
	return b
}

// Duration returns a duration option such as "5s"; a bad or negative value is recorded.
func (o *Options) Duration(name string) time.Duration {
	v := o.String(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		o.Fail(name, fmt.Sprintf("%q is not a duration such as 5s", v))
	}
	return d
}

// List returns a comma-separated option as its trimmed, non-empty items.
func (o *Options) List(name string) []string {
	var out []string
	for item := range strings.SplitSeq(o.String(name), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Fail records a problem with a field, e.g. from a plugin's own semantic checks.
func (o *Options) Fail(field, message string) {
	o.errs = append(o.errs, FieldError{field, message})
}

// Err returns the collected field errors, or nil.
func (o *Options) Err() error {
	if len(o.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(o.errs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
	return o.errs
}
