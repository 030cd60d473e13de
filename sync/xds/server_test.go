package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
)

func TestSotwSubscribeReceiveAckUpdate(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("greeter.dubbo_20880", "outbound|20880||greeter.dubbo"))
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.subscribe("greeter.dubbo_20880")

	resp, got := c.recv()
	wantClusters(t, got, "greeter.dubbo_20880", "outbound|20880||greeter.dubbo")
	if want := versionOf(t, got["greeter.dubbo_20880"]); resp.GetVersionInfo() != want {
		t.Fatalf("version %q, want the content hash %q", resp.GetVersionInfo(), want)
	}
	c.ack(resp, "greeter.dubbo_20880")

	// Neither the ACK nor an Update with identical content may push; the next response
	// must therefore be the changed content.
	srv.Update(routes("greeter.dubbo_20880", "outbound|20880||greeter.dubbo"))
	srv.Update(routes("greeter.dubbo_20880", "outbound|20880|v2|greeter.dubbo"))
	resp2, got := c.recv()
	wantClusters(t, got, "greeter.dubbo_20880", "outbound|20880|v2|greeter.dubbo")
	if resp2.GetVersionInfo() == resp.GetVersionInfo() || resp2.GetNonce() == resp.GetNonce() {
		t.Fatalf("new content sent with version %q nonce %q, same as before", resp2.GetVersionInfo(), resp2.GetNonce())
	}
	c.ack(resp2, "greeter.dubbo_20880")

	// Two responses, one of them caused by an Update (metrics are recorded after the send).
	eventually(t, "2 pushes, 1 push latency", func() bool {
		return value(t, srv.m.pushes.WithLabelValues(typeLabel, apiSotw)) == 2 && histogramCount(t, srv) == 1
	})
}

func TestSotwLateSubscriberGetsCurrentState(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "c1"))
	srv.Update(routes("a_1", "c2", "b_1", "c3"))
	srv.Update(routes("a_1", "c4", "b_1", "c3"))

	c := rdsSotw(t, dial(t, srv.addr, nil))
	c.typeURL = "" // implied on the route service
	c.subscribe("a_1")
	resp, got := c.recv()
	wantClusters(t, got, "a_1", "c4")
	c.ack(resp, "a_1")

	// Subscribing to a second name delivers both, in one state-of-the-world response.
	c.send([]string{"a_1", "b_1"}, resp.GetVersionInfo(), resp.GetNonce(), nil)
	_, got = c.recv()
	wantClusters(t, got, "a_1", "c4", "b_1", "c3")
}

func TestSotwNameThatDoesNotExistYet(t *testing.T) {
	srv := startServer(t, nil)
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.subscribe("later_9090")
	srv.waitWatching(t, "later_9090", 1)
	srv.Update(routes("other_9090", "c-other")) // unrelated: nothing for c
	srv.Update(routes("other_9090", "c-other", "later_9090", "c-later"))
	_, got := c.recv()
	wantClusters(t, got, "later_9090", "c-later")
}

func TestSotwUnrelatedUpdateDoesNotPush(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	conn := dial(t, srv.addr, nil)
	ca, cb := adsSotw(t, conn), adsSotw(t, conn)
	ca.subscribe("a_1")
	cb.subscribe("b_1")
	ra, _ := ca.recv()
	rb, _ := cb.recv()
	ca.ack(ra, "a_1")
	cb.ack(rb, "b_1")

	srv.Update(routes("a_1", "a1", "b_1", "b2"))
	rb, got := cb.recv()
	wantClusters(t, got, "b_1", "b2")
	cb.ack(rb, "b_1")

	srv.Update(routes("a_1", "a2", "b_1", "b2"))
	ra2, got := ca.recv() // the first response after b's change must be a's change
	wantClusters(t, got, "a_1", "a2")
	if ra2.GetVersionInfo() == ra.GetVersionInfo() {
		t.Fatal("a's version did not change")
	}
}

func TestSotwNackIsCountedAndNotResent(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "bad"))
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.subscribe("a_1")
	resp, _ := c.recv()
	c.send([]string{"a_1"}, "", resp.GetNonce(), errRejected) // NACK: keeps version ""

	srv.Update(routes("a_1", "bad")) // same content: nothing to send
	srv.Update(routes("a_1", "good"))
	resp2, got := c.recv()
	wantClusters(t, got, "a_1", "good")
	c.ack(resp2, "a_1")
	srv.waitNacks(t, 1)
}

func TestSotwRemoval(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.subscribe("a_1", "b_1")
	resp, got := c.recv()
	wantClusters(t, got, "a_1", "a1", "b_1", "b1")
	c.ack(resp, "a_1", "b_1")

	srv.Update(routes("a_1", "a1"))
	resp, got = c.recv()
	wantClusters(t, got, "a_1", "a1")
	if resp.GetVersionInfo() != versionOf(t, got["a_1"]) {
		t.Fatalf("version %q, want a_1's", resp.GetVersionInfo())
	}
	c.ack(resp, "a_1", "b_1")

	// With nothing left there is nothing to send (the proxy keeps what it has either way);
	// the next response is about the next content.
	srv.Update(nil)
	srv.waitSeen(t, "a_1")
	srv.Update(routes("a_1", "a1")) // what the client holds: nothing to send either
	srv.waitSeen(t, "a_1")
	srv.Update(routes("b_1", "b2"))
	_, got = c.recv()
	wantClusters(t, got, "b_1", "b2")
}

func TestSotwStaleNonceIsIgnored(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1", "c_1", "c1"))
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.subscribe("a_1")
	first, _ := c.recv()
	srv.Update(routes("a_1", "a2", "b_1", "b1", "c_1", "c1"))
	second, _ := c.recv()

	// A request answering the first response arrives after the second was sent: the server
	// ignores it, its subscription to b_1 included, and acts on the answer to the second.
	c.send([]string{"a_1", "b_1"}, first.GetVersionInfo(), first.GetNonce(), nil)
	c.send([]string{"a_1", "c_1"}, second.GetVersionInfo(), second.GetNonce(), nil)
	_, got := c.recv()
	wantClusters(t, got, "a_1", "a2", "c_1", "c1")
}

func TestSotwReconnectToAnotherReplica(t *testing.T) {
	one, two := startServer(t, nil), startServer(t, nil)
	desired := routes("a_1", "a1")
	one.Update(desired)
	two.Update(desired)

	c1 := adsSotw(t, dial(t, one.addr, nil))
	c1.subscribe("a_1")
	resp, _ := c1.recv()

	// The proxy moves to the other replica with the version it holds: equal content has an
	// equal version there, so nothing is sent until the content changes.
	c2 := adsSotw(t, dial(t, two.addr, nil))
	c2.send([]string{"a_1"}, resp.GetVersionInfo(), "", nil)
	two.waitWatching(t, "a_1", 1)
	two.Update(routes("a_1", "a2"))
	resp2, got := c2.recv()
	wantClusters(t, got, "a_1", "a2")
	if resp2.GetVersionInfo() == resp.GetVersionInfo() {
		t.Fatal("version did not change with the content")
	}
}

func TestSotwAggregatedStreamIgnoresOtherTypes(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1"))
	c := adsSotw(t, dial(t, srv.addr, nil))
	c.typeURL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	c.subscribe()
	c.typeURL = RouteType
	c.subscribe("a_1")
	resp, got := c.recv()
	wantClusters(t, got, "a_1", "a1")
	if resp.GetTypeUrl() != RouteType {
		t.Fatalf("type %q", resp.GetTypeUrl())
	}
}

func TestDeltaSubscribeUpdateRemoveUnsubscribe(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	c := adsDelta(t, dial(t, srv.addr, nil))
	c.send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "proxy-1"},
		ResourceNamesSubscribe: []string{"a_1", "x_1"},
	})
	resp, got := c.recv()
	wantClusters(t, got, "a_1", "a1")
	if v := resp.GetResources()[0].GetVersion(); v != versionOf(t, got["a_1"]) {
		t.Fatalf("version %q, want the content hash", v)
	}
	c.ack(resp)

	// b is not subscribed, x appears, a is unchanged: only x is sent.
	srv.Update(routes("a_1", "a1", "b_1", "b2", "x_1", "x1"))
	resp, got = c.recv()
	wantClusters(t, got, "x_1", "x1")
	c.ack(resp)

	srv.Update(routes("x_1", "x1"))
	resp, got = c.recv()
	if len(got) != 0 || !slices.Equal(resp.GetRemovedResources(), []string{"a_1"}) {
		t.Fatalf("got %v removed %v, want only the removal of a_1", sortedNames(got), resp.GetRemovedResources())
	}
	c.ack(resp)

	// After unsubscribing from x, its changes are not sent; subscribing to b sends b.
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"x_1"}})
	srv.waitWatching(t, "x_1", 0)
	srv.Update(routes("x_1", "x2", "b_1", "b3"))
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"b_1"}})
	_, got = c.recv()
	wantClusters(t, got, "b_1", "b3")
}

func TestDeltaReconnectWithInitialVersions(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	current := versionOf(t, routeConfig("a_1", "a1"))
	c := rdsDelta(t, dial(t, srv.addr, nil))
	c.send(&discoveryv3.DeltaDiscoveryRequest{
		ResourceNamesSubscribe:  []string{"a_1", "b_1", "gone_1"},
		InitialResourceVersions: map[string]string{"a_1": current, "b_1": "old", "gone_1": "old"},
	})
	resp, got := c.recv()
	wantClusters(t, got, "b_1", "b1")
	if !slices.Equal(resp.GetRemovedResources(), []string{"gone_1"}) {
		t.Fatalf("removed %v, want [gone_1]", resp.GetRemovedResources())
	}
}

func TestDeltaNackIsCountedAndNotResent(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "bad"))
	c := rdsDelta(t, dial(t, srv.addr, nil))
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"a_1"}})
	resp, _ := c.recv()
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: resp.GetNonce(), ErrorDetail: nackStatus(errRejected)})
	srv.Update(routes("a_1", "good"))
	_, got := c.recv()
	wantClusters(t, got, "a_1", "good")
	srv.waitNacks(t, 1)
}

func TestDeltaWildcard(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1"))
	c := adsDelta(t, dial(t, srv.addr, nil))
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"*"}})
	resp, got := c.recv()
	wantClusters(t, got, "a_1", "a1")
	c.ack(resp)
	srv.Update(routes("b_1", "b1"))
	resp, got = c.recv()
	wantClusters(t, got, "b_1", "b1")
	if !slices.Equal(resp.GetRemovedResources(), []string{"a_1"}) {
		t.Fatalf("removed %v, want [a_1]", resp.GetRemovedResources())
	}
}

func TestFetchRoutes(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	client := routeservice.NewRouteDiscoveryServiceClient(dial(t, srv.addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), recvTimeout)
	defer cancel()

	resp, err := client.FetchRoutes(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: []string{"b_1", "missing"}})
	if err != nil {
		t.Fatal(err)
	}
	got := decode(t, resp.GetTypeUrl(), wrap(resp))
	wantClusters(t, got, "b_1", "b1")
	if resp.GetVersionInfo() != versionOf(t, got["b_1"]) {
		t.Fatalf("version %q, want b_1's", resp.GetVersionInfo())
	}

	resp, err = client.FetchRoutes(ctx, &discoveryv3.DiscoveryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantClusters(t, decode(t, resp.GetTypeUrl(), wrap(resp)), "a_1", "a1", "b_1", "b1")

	if _, err := client.FetchRoutes(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}); err == nil {
		t.Fatal("fetching another type succeeded")
	}
}

func TestStreamsGaugeAndServeStops(t *testing.T) {
	srv := startServer(t, nil)
	srv.Update(routes("a_1", "a1"))
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, srv.addr, nil)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := newDeltaClient(t, stream)
	c.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"a_1"}})
	c.recv()
	gauge := srv.m.streams.WithLabelValues(apiDelta)
	if n := value(t, gauge); n != 1 {
		t.Fatalf("streams = %v, want 1", n)
	}
	cancel()
	deadline := time.Now().Add(recvTimeout)
	for value(t, gauge) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("closed stream still counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.mu.RLock()
	left := len(srv.watchers)
	srv.mu.RUnlock()
	if left != 0 {
		t.Fatalf("%d names still watched after the stream closed", left)
	}
}

func TestServeReturnsWhenContextEnds(t *testing.T) {
	s, err := New(Config{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(routes("a_1", "a1"))
	lis := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()

	c := adsSotw(t, dial(t, lis.Addr().String(), nil))
	c.subscribe("a_1")
	c.recv()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(recvTimeout):
		t.Fatal("Serve did not return after its context ended")
	}
	select {
	case m := <-c.ch:
		if m.err == nil {
			t.Fatal("stream still open after Serve returned")
		}
	case <-time.After(recvTimeout):
		t.Fatal("stream still open after Serve returned")
	}
}

func TestNothingIsAnsweredBeforeTheFirstUpdate(t *testing.T) {
	srv := startServer(t, nil)
	conn := dial(t, srv.addr, nil)

	// A proxy reconnecting to a replica that has no desired set yet must not hear that its
	// routes are gone.
	held := versionOf(t, routeConfig("a_1", "a1"))
	d := adsDelta(t, conn)
	d.send(&discoveryv3.DeltaDiscoveryRequest{
		ResourceNamesSubscribe:  []string{"a_1", "b_1"},
		InitialResourceVersions: map[string]string{"a_1": held},
	})
	s := adsSotw(t, conn)
	s.subscribe("b_1")
	srv.waitWatching(t, "b_1", 2)
	if _, err := routeservice.NewRouteDiscoveryServiceClient(conn).FetchRoutes(context.Background(), &discoveryv3.DiscoveryRequest{}); err == nil {
		t.Fatal("FetchRoutes answered before the first Update")
	}

	srv.Update(routes("a_1", "a1", "b_1", "b1"))
	resp, got := d.recv()
	wantClusters(t, got, "b_1", "b1")
	if len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("removed %v", resp.GetRemovedResources())
	}
	_, got = s.recv()
	wantClusters(t, got, "b_1", "b1")
}

func TestFirstUpdateWithoutTheNameStillAnswersLater(t *testing.T) {
	srv := startServer(t, nil)
	c := rdsDelta(t, dial(t, srv.addr, nil))
	c.send(&discoveryv3.DeltaDiscoveryRequest{
		ResourceNamesSubscribe:  []string{"gone_1"},
		InitialResourceVersions: map[string]string{"gone_1": "old"},
	})
	srv.waitWatching(t, "gone_1", 1)
	srv.Update(nil) // the first desired set is empty: the proxy learns gone_1 is gone
	resp, _ := c.recv()
	if !slices.Equal(resp.GetRemovedResources(), []string{"gone_1"}) {
		t.Fatalf("removed %v, want [gone_1]", resp.GetRemovedResources())
	}
}
