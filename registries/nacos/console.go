package nacos

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// console reads what the naming API cannot tell: the namespaces, and the services of every
// group. Both come from Nacos's console HTTP API (/v1/console/namespaces and
// /v1/ns/catalog/services), which Nacos 1.x and 2.x serve and other Nacos-protocol servers
// may not.
type console struct {
	http  *http.Client
	bases []string // scheme://host:port/contextPath
	creds credentials

	mu          sync.Mutex
	token       string
	tokenExpiry time.Time
}

// maxConsoleBody bounds a console answer; a catalog page of servicePageSize names is far
// smaller.
const maxConsoleBody = 32 << 20

// errNoConsole says that a server does not serve a console API path.
var errNoConsole = errors.New("the server does not serve the Nacos console API")

func newConsole(cfg *config) (*console, error) {
	scheme := "http"
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.tls {
		scheme = "https"
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.tlsSkipVerify} //nolint:gosec // only when configured, for tests
		if cfg.tlsCAFile != "" {
			pem, err := os.ReadFile(cfg.tlsCAFile)
			if err != nil {
				return nil, fmt.Errorf("reading tlsCAFile: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tlsCAFile %s holds no PEM certificate", cfg.tlsCAFile)
			}
		}
		tr.TLSClientConfig = tc
	}
	c := &console{http: &http.Client{Transport: tr, Timeout: cfg.timeout}, creds: cfg.creds}
	for _, s := range cfg.servers {
		c.bases = append(c.bases, scheme+"://"+s.String()+strings.TrimRight(cfg.contextPath, "/"))
	}
	return c, nil
}

// namespaces lists the namespace IDs.
func (c *console) namespaces(ctx context.Context) ([]string, error) {
	body, err := c.get(ctx, "/v1/console/namespaces", nil)
	if err != nil {
		return nil, err
	}
	return parseNamespaces(body)
}

// services lists the services of every group of a namespace.
func (c *console) services(ctx context.Context, namespace string) ([]serviceID, error) {
	var out []serviceID
	seen := map[serviceID]bool{}
	for page := 1; ; page++ {
		q := url.Values{
			"namespaceId": {namespace}, "withInstances": {"false"},
			"pageNo": {strconv.Itoa(page)}, "pageSize": {strconv.Itoa(servicePageSize)},
		}
		body, err := c.get(ctx, "/v1/ns/catalog/services", q)
		if err != nil {
			return nil, err
		}
		ids, count, err := parseCatalog(namespace, body)
		if err != nil {
			return nil, err
		}
		added := 0
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
				added++
			}
		}
		if len(ids) < servicePageSize || added == 0 || len(out) >= count {
			return out, nil
		}
	}
}

// parseNamespaces reads /v1/console/namespaces: {"data":[{"namespace":"…"},…]}. The public
// namespace's ID is empty in Nacos 1.x and "public" later.
func parseNamespaces(body []byte) ([]string, error) {
	var resp struct {
		Data []struct {
			Namespace string `json:"namespace"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("namespace list is not the expected JSON: %v", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, d := range resp.Data {
		id := d.Namespace
		if id == "" {
			id = publicNamespace
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// parseCatalog reads a page of /v1/ns/catalog/services:
// {"count":n,"serviceList":[{"name":"…","groupName":"…"},…]}.
func parseCatalog(namespace string, body []byte) ([]serviceID, int, error) {
	var resp struct {
		Count       int `json:"count"`
		ServiceList []struct {
			Name      string `json:"name"`
			GroupName string `json:"groupName"`
		} `json:"serviceList"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, 0, fmt.Errorf("service catalog is not the expected JSON: %v", err)
	}
	out := make([]serviceID, 0, len(resp.ServiceList))
	for _, s := range resp.ServiceList {
		if s.Name == "" {
			continue
		}
		// Nacos 1.x may give grouped names (group@@service) in the catalog.
		group, name := s.GroupName, s.Name
		if g, n, ok := strings.Cut(s.Name, "@@"); ok {
			group, name = g, n
		}
		if group == "" {
			group = defaultGroup
		}
		out = append(out, serviceID{namespace: namespace, group: group, name: name})
	}
	return out, resp.Count, nil
}

// get asks each server in turn until one answers.
func (c *console) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	var errs []error
	for _, base := range c.bases {
		body, err := c.getFrom(ctx, base, path, q)
		if err == nil || errors.Is(err, errNoConsole) || ctx.Err() != nil {
			return body, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (c *console) getFrom(ctx context.Context, base, path string, q url.Values) ([]byte, error) {
	if q == nil {
		q = url.Values{}
	}
	if c.creds.username != "" {
		token, err := c.login(ctx, base)
		if err != nil {
			return nil, err
		}
		q.Set("accessToken", token)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL carries the token: name only the path.
		return nil, fmt.Errorf("GET %s%s: %v", base, path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxConsoleBody))
	switch {
	case err != nil:
		return nil, fmt.Errorf("GET %s%s: reading the answer: %v", base, path, err)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s%s: %w (HTTP 404); name the namespaces and groups to import instead of %q", base, path, errNoConsole, allSelector)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		c.forgetToken()
		return nil, fmt.Errorf("GET %s%s: Nacos refused access (HTTP %d); the console API needs a user with read access (username and password)", base, path, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s%s: HTTP %d: %s", base, path, resp.StatusCode, clip(strings.TrimSpace(string(body)), 200))
	}
	return body, nil
}

// login returns an access token for the configured user, logging in when it has none or it
// is about to expire.
func (c *console) login(ctx context.Context, base string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Now().Before(c.tokenExpiry) {
		return c.token, nil
	}
	form := url.Values{"username": {c.creds.username}, "password": {c.creds.password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/auth/login", strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("logging in: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("logging in to %s: %v", base, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("logging in to %s: HTTP %d (check username and password)", base, resp.StatusCode)
	}
	var lr struct {
		AccessToken string `json:"accessToken"`
		TokenTTL    int64  `json:"tokenTtl"`
	}
	if err := json.Unmarshal(body, &lr); err != nil || lr.AccessToken == "" {
		return "", fmt.Errorf("logging in to %s: the answer has no access token", base)
	}
	ttl := time.Duration(lr.TokenTTL) * time.Second
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	c.token, c.tokenExpiry = lr.AccessToken, time.Now().Add(ttl*9/10)
	return c.token, nil
}

func (c *console) forgetToken() {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
}
