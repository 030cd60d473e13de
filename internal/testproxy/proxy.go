// Package testproxy is a TCP proxy for failure tests against real servers: it stands between
// a client under test and the server, and can cut the connections, refuse new ones for a
// while, and (for ZooKeeper) expire the client's session.
package testproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections on a loopback port to a target address. Use New.
type Proxy struct {
	ln     net.Listener
	target string
	// firstReply, when set, reads the server's first message of each connection and returns
	// the bytes to forward; the rest is copied as is.
	firstReply func(server io.Reader) ([]byte, error)

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
}

// New starts a proxy to target (host:port) on a free loopback port; it stops at cleanup.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	return start(t, target, nil)
}

func start(t testing.TB, target string, firstReply func(io.Reader) ([]byte, error)) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, firstReply: firstReply, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
	})
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address of the server behind the proxy.
func (p *Proxy) Target() string { return p.target }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked := p.blocked
		p.mu.Unlock()
		if blocked {
			c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *Proxy) pipe(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	if p.blocked { // blocked while dialling
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
		client.Close()
		server.Close()
	}()
	go func() {
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	if p.firstReply != nil {
		first, err := p.firstReply(server)
		if err != nil {
			return
		}
		if _, err := client.Write(first); err != nil {
			return
		}
	}
	_, _ = io.Copy(client, server)
}

// Cut closes every proxied connection; new ones are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Block cuts every connection and refuses new ones until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	p.Cut()
}

// Unblock lets connections through again.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}
