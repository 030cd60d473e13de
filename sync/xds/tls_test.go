package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/credentials"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client certificate.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meltemi test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		pool:   pool,
		server: leaf(2, "meltemi-xds", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}),
		client: leaf(3, "proxy", x509.ExtKeyUsageClientAuth, nil),
	}
}

// subscribeOnce opens an ADS stream, asks for a_1 and returns the first response or the
// stream's error.
func subscribeOnce(t *testing.T, addr string, creds credentials.TransportCredentials) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), recvTimeout)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, addr, creds)).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{"a_1"}}); err != nil {
		return nil, err
	}
	return stream.Recv()
}

func TestTLS(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12})
	srv.Update(routes("a_1", "a1"))

	resp, err := subscribeOnce(t, srv.addr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool}))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	wantClusters(t, decode(t, resp.GetTypeUrl(), wrap(resp)), "a_1", "a1")

	if _, err := subscribeOnce(t, srv.addr, nil); err == nil {
		t.Fatal("a plaintext client was served by a TLS server")
	}
	if _, err := subscribeOnce(t, srv.addr, credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool()})); err == nil {
		t.Fatal("a client not trusting the server's CA completed the handshake")
	}
}

func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	srv := startServer(t, &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	srv.Update(routes("a_1", "a1"))

	resp, err := subscribeOnce(t, srv.addr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}))
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	wantClusters(t, decode(t, resp.GetTypeUrl(), wrap(resp)), "a_1", "a1")

	if _, err := subscribeOnce(t, srv.addr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool})); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	// A certificate from another CA is refused too.
	other := newPKI(t)
	if _, err := subscribeOnce(t, srv.addr, credentials.NewTLS(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{other.client}})); err == nil {
		t.Fatal("a client with a certificate from an unknown CA was served")
	}
}

func TestTLSConfigWithoutCertificateIsRefused(t *testing.T) {
	if _, err := New(Config{TLS: &tls.Config{MinVersion: tls.VersionTLS12}}); err == nil {
		t.Fatal("New accepted a TLS configuration without a server certificate")
	}
}
