package sdk

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// ChangeKind is what a Change sends.
type ChangeKind int

// Change kinds.
const (
	// ChangeSnapshot sends the complete state (Change.Services).
	ChangeSnapshot ChangeKind = iota + 1
	// ChangeUpsert sends one service whole (Change.Service).
	ChangeUpsert
	// ChangeDelete removes one service (Change.Key).
	ChangeDelete
	// ChangeReject reports a registry item that was not used (Change.Item, Change.Reason;
	// Change.Key when the item is a whole service).
	ChangeReject
)

// Change is one thing the host must be told.
type Change struct {
	Kind     ChangeKind
	Services []catalog.Service
	Service  catalog.Service
	Key      string
	Item     string
	Reason   string
	// Prev is the state an upsert replaces, if Had: what to restore with Unsent.
	Prev catalog.Service
	Had  bool
}

// maxRemembered bounds the rejections a Plan remembers as reported; past it, it starts over
// (rejections still present are then reported once more).
const maxRemembered = 10000

// Plan decides what the host must hear of what a plugin states, as external-dns's plan step
// diffs desired records against current ones: it keeps the state the host was sent, and turns
// a plugin's "service K is now S" (Set), "K is gone" (Remove) or "this is everything"
// (Snapshot) into the upserts, deletes and rejections that bring the host there, and nothing
// when nothing changed. Every Watch call's Emitter has one; test kits standing in for the host
// (sdktest) use it too, so tests see what the host would. It is not safe for concurrent use.
type Plan struct {
	uniqueHosts bool
	started     bool // the first snapshot was planned
	sent        map[string]catalog.Service
	// With uniqueHosts: host -> the key holding it, and host -> key -> the state of services
	// waiting for it.
	holder  map[string]string
	waiting map[string]map[string]catalog.Service
	// reported holds item -> reason of the rejections reported.
	reported map[string]string
	// one holds the single change of the common upsert, returned without an allocation.
	one [1]Change
}

// NewPlan returns a plan for one Watch call. With uniqueHosts, a service whose host another
// service of the registry already has is rejected until that one lets the host go (see
// Description.UniqueHosts).
func NewPlan(uniqueHosts bool) *Plan {
	return &Plan{uniqueHosts: uniqueHosts, sent: map[string]catalog.Service{}, holder: map[string]string{},
		waiting: map[string]map[string]catalog.Service{}, reported: map[string]string{}}
}

// Sent returns the state of a service the host was sent, if any.
func (p *Plan) Sent(key string) (catalog.Service, bool) {
	svc, ok := p.sent[key]
	return svc, ok
}

// SentKeys returns the keys of the services the host was sent, sorted.
func (p *Plan) SentKeys() []string { return slices.Sorted(maps.Keys(p.sent)) }

// Snapshot plans the complete state. The first snapshot is sent whole; later ones as the
// changes from what the host has.
func (p *Plan) Snapshot(services []catalog.Service) []Change {
	services = slices.Clone(services)
	// The first of several services claiming one host (by key) keeps it, whatever the order
	// the plugin listed them in.
	slices.SortFunc(services, func(a, b catalog.Service) int { return cmp.Compare(a.Key, b.Key) })
	if p.started {
		var out []Change
		present := make(map[string]bool, len(services))
		for _, svc := range services {
			present[svc.Key] = true
		}
		for _, key := range slices.Sorted(maps.Keys(p.sent)) {
			if !present[key] {
				out = append(out, p.Remove(key)...)
			}
		}
		for _, h := range slices.Sorted(maps.Keys(p.waiting)) {
			for key := range p.waiting[h] {
				if !present[key] {
					delete(p.waiting[h], key)
				}
			}
		}
		for _, svc := range services {
			out = append(out, p.Set(svc)...)
		}
		return out
	}
	p.started = true
	var rejections []Change
	kept := services[:0]
	for _, svc := range services {
		svc = svc.Normalized()
		if len(svc.Instances) == 0 {
			continue
		}
		if reason, blocked := p.claim(svc); blocked {
			rejections = append(rejections, p.Reject(svc.Key, reason)...)
			continue
		}
		p.sent[svc.Key] = svc
		kept = append(kept, svc)
	}
	return append([]Change{{Kind: ChangeSnapshot, Services: kept}}, rejections...)
}

// Set plans one service's complete state; a service without instances is removed. Like every
// Plan method, it returns changes that are valid until the next call on the plan.
func (p *Plan) Set(svc catalog.Service) []Change {
	if !p.started {
		return nil // the first snapshot is the complete state
	}
	svc = svc.Normalized()
	if len(svc.Instances) == 0 {
		return p.Remove(svc.Key)
	}
	prev, had := p.sent[svc.Key]
	if had && prev.Equal(svc) {
		return nil
	}
	var out []Change
	if had && prev.Host != svc.Host {
		out = append(out, p.release(prev.Host, svc.Key)...)
	}
	if reason, blocked := p.claim(svc); blocked {
		if had { // it had another host, released above
			delete(p.sent, svc.Key)
			out = append(out, Change{Kind: ChangeDelete, Key: svc.Key})
		}
		return append(out, p.Reject(svc.Key, reason)...)
	}
	p.sent[svc.Key] = svc
	// What was wrong with the service as a whole is over: should it come back, it is news.
	delete(p.reported, svc.Key)
	upsert := Change{Kind: ChangeUpsert, Service: svc, Key: svc.Key, Prev: prev, Had: had}
	if len(out) == 0 {
		// Every change of a plugin comes through here: no allocation for it. Full slice
		// expression: a caller appending to it copies.
		p.one[0] = upsert
		return p.one[:1:1]
	}
	return append(out, upsert)
}

// Remove plans that a service is gone.
func (p *Plan) Remove(key string) []Change {
	if !p.started {
		return nil
	}
	for h, keys := range p.waiting {
		delete(keys, key)
		if len(keys) == 0 {
			delete(p.waiting, h)
		}
	}
	prev, had := p.sent[key]
	if !had {
		return nil
	}
	delete(p.sent, key)
	out := []Change{{Kind: ChangeDelete, Key: key}}
	return append(out, p.release(prev.Host, key)...)
}

// Reject plans a rejection: an item and reason already reported are not reported again (a
// service's own rejection, item = its key, until the service is sent again).
func (p *Plan) Reject(item, reason string) []Change {
	if prev, ok := p.reported[item]; ok && prev == reason {
		return nil
	}
	if len(p.reported) >= maxRemembered {
		clear(p.reported)
	}
	p.reported[item] = reason
	return []Change{{Kind: ChangeReject, Item: item, Reason: reason}}
}

// Unsent undoes a planned upsert the wire could not carry: the host keeps what it had of the
// service, and so does the plan.
func (p *Plan) Unsent(key string, had catalog.Service, ok bool) {
	if ok {
		p.sent[key] = had
	} else {
		delete(p.sent, key)
	}
}

// claim gives svc its host, or says why it cannot have it.
func (p *Plan) claim(svc catalog.Service) (reason string, blocked bool) {
	if !p.uniqueHosts {
		return "", false
	}
	if holder, taken := p.holder[svc.Host]; taken && holder != svc.Key {
		if p.waiting[svc.Host] == nil {
			p.waiting[svc.Host] = map[string]catalog.Service{}
		}
		p.waiting[svc.Host][svc.Key] = svc
		return fmt.Sprintf("host %s is already the host of %s; make the host templates tell them apart", svc.Host, holder), true
	}
	p.holder[svc.Host] = svc.Key
	if keys := p.waiting[svc.Host]; keys != nil {
		delete(keys, svc.Key)
	}
	return "", false
}

// release lets a host go: the first service waiting for it (by key) takes it.
func (p *Plan) release(host, key string) []Change {
	if !p.uniqueHosts || p.holder[host] != key {
		return nil
	}
	delete(p.holder, host)
	keys := p.waiting[host]
	if len(keys) == 0 {
		delete(p.waiting, host)
		return nil
	}
	next := slices.Sorted(maps.Keys(keys))[0]
	svc := keys[next]
	delete(keys, next)
	return p.Set(svc)
}
