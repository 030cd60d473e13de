package consul

import (
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// fetchConcurrency bounds the non-blocking reads (a service's first read, and reads after a
// resync), which are short; blocking queries are bounded by maxWatches.
const fetchConcurrency = 16

// newClient builds a Consul API client from cfg alone. The api package fills unset fields
// from CONSUL_* environment variables (a token, a namespace); pinnedTransport undoes that
// for every request, so only the ServiceRegistry's configuration counts.
func newClient(cfg *config) (*api.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Consul limits the connections of one client address (http_max_conns_per_client, 200
	// by default) and counts idle ones too: bound them all, busy and idle, by what the
	// watches can use at once, and keep that many idle so watches taking turns reuse them.
	conns := maxConnections(cfg)
	transport.MaxConnsPerHost = conns
	transport.MaxIdleConnsPerHost = conns
	transport.MaxIdleConns = conns
	transport.TLSHandshakeTimeout = 10 * time.Second
	if cfg.scheme == "https" {
		tlsConf, err := api.SetupTLSConfig(&cfg.tls)
		if err != nil {
			return nil, err
		}
		transport.TLSClientConfig = tlsConf
	}
	return api.NewClient(&api.Config{
		Address:    cfg.address,
		Scheme:     cfg.scheme,
		Token:      cfg.token,
		HttpClient: &http.Client{Transport: pinnedTransport{base: transport, token: cfg.token}},
	})
}

// pinnedTransport sends exactly the configured token (or none) and no enterprise namespace
// or partition, whatever the api package took from the process environment.
type pinnedTransport struct {
	base  http.RoundTripper
	token string
}

func (p pinnedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if p.token == "" {
		r.Header.Del("X-Consul-Token")
	} else {
		r.Header.Set("X-Consul-Token", p.token)
	}
	if q := r.URL.Query(); q.Has("ns") || q.Has("partition") {
		q.Del("ns")
		q.Del("partition")
		r.URL.RawQuery = q.Encode()
	}
	return p.base.RoundTrip(r)
}

// maxConnections is the most connections the plugin opens to the agent: the blocking health
// queries, the short reads, a catalog watch per datacenter and one spare.
func maxConnections(cfg *config) int {
	return cfg.maxWatches + fetchConcurrency + max(len(cfg.datacenters), 1) + 1
}
