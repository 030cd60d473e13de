package traffic

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	redisv1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// Passwords reach the proxies' configuration and nothing else: not problems (which become
// Events and status conditions), whatever is wrong with the objects naming them.
func TestRedisPasswordsStayOutOfProblems(t *testing.T) {
	secrets := []string{"testredis", "testredis123!", "sesame", "admin", "hunter2", "s3ss10ns"}
	for _, dir := range []string{"testdata/redis-kafka-zookeeper", "testdata/redis-problems"} {
		in, opts, decodeProblems := loadCase(t, dir)
		out := Translate(in, opts)
		for _, p := range append(decodeProblems, out.Problems...) {
			for _, s := range secrets {
				if strings.Contains(p.Message, s) {
					t.Errorf("%s: problem quotes a password: %s", dir, p)
				}
			}
		}
	}
}

// A Secret's new password reaches the configuration at the next translation; without the
// Secret no new proxy is built and the port's EnvoyFilter is held (the writer keeps the one
// that works).
func TestRedisSecretChange(t *testing.T) {
	in, opts, _ := loadCase(t, "testdata/redis-kafka-zookeeper")
	ref := types.NamespacedName{Namespace: "redis", Name: "redis-service-secret"}
	if got := string(in.Secrets[ref]["password"]); got != "testredis\n" {
		t.Fatalf("decoded secret = %q", got)
	}
	filter := func(in Input) string {
		for _, ef := range Translate(in, opts).EnvoyFilters {
			if ef.GetName() == "meltemi-redis-single.redis.svc.cluster.local-6379-outbound" {
				raw, err := json.Marshal(ef.Object)
				if err != nil {
					t.Fatal(err)
				}
				return string(raw)
			}
		}
		return ""
	}
	before := filter(in)
	if !strings.Contains(before, `"auth_password":{"inline_string":"testredis"}`) {
		t.Fatalf("upstream password not in the cluster: %s", before)
	}
	in.Secrets = map[types.NamespacedName]map[string][]byte{ref: {"password": []byte("rotated")}}
	if after := filter(in); !strings.Contains(after, `"inline_string":"rotated"`) || strings.Contains(after, "testredis\"") {
		t.Errorf("rotated password not applied: %s", after)
	}
	in.Secrets = nil
	if gone := filter(in); gone != "" {
		t.Errorf("without its Secret the port still gets a newly built Redis proxy: %s", gone)
	}
	held := Translate(in, opts).Held
	if want := (types.NamespacedName{Namespace: "istio-system", Name: "meltemi-redis-single.redis.svc.cluster.local-6379-outbound"}); !slices.Contains(held, want) {
		t.Errorf("held %v, want %v: the writer would withdraw the working EnvoyFilter", held, want)
	}
}

func TestRedisCredentials(t *testing.T) {
	tr := &translator{secrets: map[types.NamespacedName]map[string][]byte{
		{Namespace: "ns", Name: "token"}: {"token": []byte(" tok \n")},
		{Namespace: "ns", Name: "both"}:  {"pw": []byte("p"), "user": []byte("u"), "password": []byte("other")},
	}, out: &Output{}}
	for _, tc := range []struct {
		name       string
		auth       redisv1.Auth
		user, pass string
		ok         bool
	}{
		{"plain", redisv1.Auth{Plain: &redisv1.PlainAuth{Password: "x", Username: "y"}}, "y", "x", true},
		{"plain without password", redisv1.Auth{Plain: &redisv1.PlainAuth{Username: "y"}}, "", "", false},
		{"token key, trimmed", redisv1.Auth{Secret: &redisv1.SecretReference{Name: "token"}}, "", "tok", true},
		{"named keys", redisv1.Auth{Secret: &redisv1.SecretReference{Name: "both", PasswordField: "pw", UsernameField: "user"}}, "u", "p", true},
		{"missing named user key", redisv1.Auth{Secret: &redisv1.SecretReference{Name: "token", UsernameField: "nope"}}, "", "", false},
		{"both forms", redisv1.Auth{Plain: &redisv1.PlainAuth{Password: "x"}, Secret: &redisv1.SecretReference{Name: "token"}}, "", "", false},
		{"neither", redisv1.Auth{}, "", "", false},
	} {
		user, pass, ok := tr.credentials("RedisService", "ns", "n", "h", "settings.auth", &tc.auth)
		if user != tc.user || pass != tc.pass || ok != tc.ok {
			t.Errorf("%s: got %q %q %v, want %q %q %v", tc.name, user, pass, ok, tc.user, tc.pass, tc.ok)
		}
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:7000": "10.0.0.1:7000", "redis.ns": "redis.ns:6379", "[fd00::1]:7001": "fd00::1:7001", "fd00::1": "fd00::1:6379",
	} {
		a, err := hostPort(in, 6379)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		sa := a.GetSocketAddress()
		if got := sa.GetAddress() + ":" + itoa(sa.GetPortValue()); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"10.0.0.1:x", ":7000", "10.0.0.1:0", "host:70000"} {
		if _, err := hostPort(bad, 6379); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
