// Package vip gives every mesh host a virtual IP from a configured range, so that proxies
// can match a service's outbound listener by address. Addresses are derived from the host
// name (stable across restarts without any state) and, once known, kept: addresses already
// written to the cluster are seeded back at start so a hash collision resolved one way
// before a restart stays resolved the same way after it.
package vip

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/netip"
	"sync"
)

// Allocator hands out addresses from one prefix. The zero value is not usable; see New.
type Allocator struct {
	prefix netip.Prefix
	size   uint64 // usable addresses

	mu     sync.Mutex
	byHost map[string]netip.Addr
	byAddr map[netip.Addr]string
}

// New returns an allocator for cidr (e.g. "240.240.0.0/16"). The network address and, for
// IPv4, the broadcast address are never handed out.
func New(cidr string) (*Allocator, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("VIP range: %w", err)
	}
	p = p.Masked()
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits < 2 {
		return nil, fmt.Errorf("VIP range %s is too small", p)
	}
	size := uint64(1)<<min(hostBits, 62) - 2
	return &Allocator{prefix: p, size: size, byHost: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}}, nil
}

// Seed records an address already in use by host (read back from the cluster). Addresses
// outside the range or already taken are ignored; the host then gets a fresh one.
func (a *Allocator) Seed(host, addr string) {
	ip, err := netip.ParseAddr(addr)
	if err != nil || !a.prefix.Contains(ip) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, taken := a.byAddr[ip]; taken {
		return
	}
	if old, ok := a.byHost[host]; ok {
		delete(a.byAddr, old)
	}
	a.byHost[host], a.byAddr[ip] = ip, host
}

// Assign returns host's address, allocating one when it has none: the slot its name hashes
// to, or the next free one after it.
func (a *Allocator) Assign(host string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byHost[host]; ok {
		return ip.String(), nil
	}
	if uint64(len(a.byAddr)) >= a.size {
		return "", fmt.Errorf("VIP range %s is exhausted (%d addresses)", a.prefix, a.size)
	}
	h := fnv.New64a()
	h.Write([]byte(host))
	slot := h.Sum64() % a.size
	for i := uint64(0); i < a.size; i++ {
		ip := a.addr((slot + i) % a.size)
		if _, taken := a.byAddr[ip]; !taken {
			a.byHost[host], a.byAddr[ip] = ip, host
			return ip.String(), nil
		}
	}
	return "", fmt.Errorf("VIP range %s is exhausted", a.prefix)
}

// Release frees host's address.
func (a *Allocator) Release(host string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byHost[host]; ok {
		delete(a.byHost, host)
		delete(a.byAddr, ip)
	}
}

// addr is the slot-th usable address (slot 0 is the one after the network address).
func (a *Allocator) addr(slot uint64) netip.Addr {
	base := a.prefix.Addr()
	if base.Is4() {
		b := base.As4()
		v := binary.BigEndian.Uint32(b[:]) + uint32(slot) + 1
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := base.As16()
	n := new(big.Int).SetBytes(b[:])
	n.Add(n, new(big.Int).SetUint64(slot+1))
	n.FillBytes(b[:])
	return netip.AddrFrom16(b)
}
