// Package sdk is everything a registry plugin author needs besides the data it reports
// (plugins/catalog): implement Plugin and call Serve. go-plugin, gRPC and the wire format
// stay behind this package.
//
//	func main() { sdk.Serve(&myRegistry{}) }
//
// See docs/plugin-authors.md for a walk-through.
package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Plugin is implemented by a registry plugin.
type Plugin interface {
	// Describe names the plugin and the options it accepts.
	Describe() Description
	// Configure validates and stores the registry's configuration. Return FieldErrors for
	// problems with particular options, so users see which field is wrong.
	Configure(ctx context.Context, cfg Config) error
	// Watch reports the registry's services through e until ctx is done: first a complete
	// Snapshot, then Set and Remove as services change. It should keep retrying its registry connection
	// itself (reporting e.Health), and return only when ctx ends or on an unrecoverable error;
	// the host restarts a plugin whose Watch failed. Watch may be called again after the
	// host reconnects; each call must start with a new Snapshot.
	Watch(ctx context.Context, e Emitter) error
}

// Description tells the host what a plugin is.
type Description struct {
	Kind         string
	Version      string
	Capabilities []string
	Options      []Option
	// UniqueHosts makes the SDK refuse to let two services of the registry share a host: the
	// later one (by key) is rejected until the first lets the host go. Set it when one host for
	// two services can only be a mistake of the host templates; leave it off when services are
	// meant to merge (e.g. one name in several datacenters). It is not sent to the host.
	UniqueHosts bool
}

// OptionType is the type of an option's value.
type OptionType int

// Option types.
const (
	String OptionType = iota + 1
	Int
	Bool
	Duration
	List
)

// Option describes one configuration option.
type Option struct {
	Name        string
	Description string
	Type        OptionType
	Required    bool
	Default     string
	// Secret options arrive in Config.Secrets and must never be logged.
	Secret bool
}

// Config is a registry's configuration.
type Config struct {
	// Registry is the name of the ServiceRegistry this plugin serves.
	Registry string
	Address  string
	Options  map[string]string
	// Secrets holds credentials. Never log them or put them into errors.
	Secrets map[string]string
}

// Emitter carries what a plugin knows of its registry to the host. The plugin states what
// is — the whole registry, or one service whole — and the SDK sends the host only what that
// changes: an unchanged service costs nothing, so a plugin never keeps its own record of what
// it sent. Calls block while the host is busy (back-pressure); they are safe for concurrent
// use. Snapshot and Set take ownership of the services given: do not modify them, their
// instance slices or their label maps later.
type Emitter interface {
	// Snapshot states the complete state of the registry: services not in it are gone. The
	// first snapshot of a Watch call reaches the host whole, later ones (after a reconnect or
	// a resync) as the changes from what it has. Set and Remove before the first snapshot
	// change nothing.
	Snapshot(services []catalog.Service)
	// Set states the complete current state of one service (every instance); a service
	// without instances is gone. It reports whether the host is told anything.
	Set(svc catalog.Service) bool
	// Remove states that a service is gone. It reports whether the host is told anything.
	Remove(key string) bool
	// Sent returns the state of a service the host has, as last sent: what a plugin must
	// stand by when it cannot read a service for a while.
	Sent(key string) (catalog.Service, bool)
	// SentKeys returns the keys of the services the host has, sorted.
	SentKeys() []string
	// Health reports whether the plugin can reach its registry. A report equal to the last
	// one is not sent again, so a plugin may report on every attempt.
	Health(connected bool, message string)
	// Reject reports a registry item that could not be understood; an item is reported once
	// per reason.
	Reject(item, reason string)
}

// Sleep waits for d or until ctx ends, for a plugin's retry backoff; it reports whether the
// full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// FieldError is a problem with one configuration option.
type FieldError struct {
	Field   string
	Message string
}

// FieldErrors is returned by Configure when options are invalid.
type FieldErrors []FieldError

func (fe FieldErrors) Error() string {
	parts := make([]string, len(fe))
	for i, e := range fe {
		parts[i] = e.Field + ": " + e.Message
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// AsFieldErrors unwraps err into field errors; a plain error becomes one for field "".
func AsFieldErrors(err error) FieldErrors {
	var fe FieldErrors
	if errors.As(err, &fe) {
		return fe
	}
	return FieldErrors{{Message: err.Error()}}
}

func (t OptionType) String() string {
	switch t {
	case String:
		return "string"
	case Int:
		return "int"
	case Bool:
		return "bool"
	case Duration:
		return "duration"
	case List:
		return "list"
	}
	return fmt.Sprintf("OptionType(%d)", int(t))
}
