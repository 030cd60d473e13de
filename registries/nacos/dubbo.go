package nacos

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// dubboName is the Nacos service name of a Dubbo interface-level registration:
// <category>:<interface>:<version>:<group>, e.g. providers:org.example.Greeter:1.0.0:blue.
// Version and group are empty when not set (providers:org.example.Greeter::).
type dubboName struct {
	category, iface, version, group string
}

// dubboCategories are the categories Dubbo registers into Nacos. Only providers are
// endpoints; the others are recognised so that they are skipped, not imported.
var dubboCategories = set("providers", "consumers", "routers", "configurators")

const dubboProviders = "providers"

// dubboKeyPrefix starts the key of a Dubbo interface; one key holds every version and group
// of the interface, since one host cannot be split across ServiceEntries.
const dubboKeyPrefix = "dubbo:"

// parseDubboName recognises Dubbo's service names; ok is false for other services. err is
// set for a Dubbo name that cannot be used (no interface).
func parseDubboName(name string) (d dubboName, ok bool, err error) {
	parts := strings.SplitN(name, ":", 4)
	if len(parts) < 2 || !dubboCategories[parts[0]] {
		return d, false, nil
	}
	d.category, d.iface = parts[0], parts[1]
	if len(parts) > 2 {
		d.version = parts[2]
	}
	if len(parts) > 3 {
		d.group = parts[3]
	}
	if d.iface == "" || len(d.iface) > 256 || !utf8.ValidString(d.iface) ||
		strings.ContainsFunc(d.iface, func(r rune) bool { return unicode.IsSpace(r) || r == '/' }) {
		return d, true, errors.New("the Dubbo service name has no valid interface")
	}
	return d, true, nil
}

func (d dubboName) key() string { return dubboKeyPrefix + d.iface }
