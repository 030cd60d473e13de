package nacos

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestParseNamespaces(t *testing.T) {
	// Nacos 1.x gives the public namespace an empty ID, 2.x "public".
	body := `{"code":200,"message":null,"data":[
		{"namespace":"","namespaceShowName":"public","quota":200,"configCount":0,"type":0},
		{"namespace":"public","namespaceShowName":"public","type":0},
		{"namespace":"e2b1c4a5-dev","namespaceShowName":"dev","quota":200,"configCount":3,"type":2}]}`
	got, err := parseNamespaces([]byte(body))
	if err != nil || !slices.Equal(got, []string{"public", "e2b1c4a5-dev"}) {
		t.Fatalf("parseNamespaces = %v, %v", got, err)
	}
	if _, err := parseNamespaces([]byte(`<html>login</html>`)); err == nil {
		t.Fatal("no error for HTML")
	}
}

func TestParseCatalog(t *testing.T) {
	body := `{"count":3,"serviceList":[
		{"name":"orders","groupName":"DEFAULT_GROUP","clusterCount":1,"ipCount":2,"healthyInstanceCount":2,"triggerFlag":"false"},
		{"name":"payments@@billing","groupName":"","clusterCount":1},
		{"name":"providers:org.example.Greeter:1.0.0:","groupName":"dubbo"},
		{"name":"","groupName":"x"},
		{"name":"nogroup"}]}`
	ids, count, err := parseCatalog("dev", []byte(body))
	if err != nil || count != 3 {
		t.Fatalf("parseCatalog: %v, count %d", err, count)
	}
	want := []serviceID{
		{"dev", "DEFAULT_GROUP", "orders"}, {"dev", "payments", "billing"},
		{"dev", "dubbo", "providers:org.example.Greeter:1.0.0:"}, {"dev", "DEFAULT_GROUP", "nogroup"},
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids = %v, want %v", ids, want)
	}
	if _, _, err := parseCatalog("dev", []byte(`{"serviceList":{}}`)); err == nil {
		t.Fatal("no error for a wrong shape")
	}
}

// TestRedact: credentials the client library obtained or computed (tokens, signatures) are
// found by their field names; the configured credentials themselves are the SDK's to remove
// (sdk.Redact, tested there).
func TestRedact(t *testing.T) {
	for _, in := range []string{
		`api</v1/auth/login>, params:<{"password":"hunter2!","username":"nacos-user"}>`,
		`request path[/nacos/v1/ns/instance/list], params:[{"accessToken":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}]`,
		`GET http://n:8848/nacos/v1/ns/catalog/services?accessToken=eyJ0b2tlbg&pageNo=1`,
		`header:[{"Spas-AccessKey":["AK123456"],"Spas-Signature":["c2lnbmF0dXJl"],"Timestamp":["1"]}]`,
	} {
		out := redact(in)
		for _, s := range []string{"hunter2!", "eyJhbGciOiJIUzI1NiJ9", "eyJ0b2tlbg", "AK123456", "c2lnbmF0dXJl"} {
			if strings.Contains(out, s) {
				t.Errorf("redact(%q) = %q still shows %q", in, out, s)
			}
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("redact(%q) = %q redacted nothing", in, out)
		}
	}
	if out := redact("pageNo=1&pageSize=500"); out != "pageNo=1&pageSize=500" {
		t.Errorf("redact changed harmless text: %q", out)
	}
}

func TestSDKLoggerDropsChatterAndSecrets(t *testing.T) {
	var buf bytes.Buffer
	l := sdkLogger{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Infof("service key:%s was updated to:%s", "DEFAULT_GROUP@@orders", "{...}")
	l.Debug("every request")
	l.Errorf("api<%s>, params:<%s>", "/v1/auth/login", `{"password":"hunter2!"}`)
	l.Errorf("mkdir cacheDir failed,cacheDir:%s,err:%v", "/dev/null/nacos-cache", "not a directory")
	out := buf.String()
	if strings.Contains(out, "was updated") || strings.Contains(out, "every request") || strings.Contains(out, "cacheDir") {
		t.Errorf("info and debug lines passed: %s", out)
	}
	if !strings.Contains(out, "/v1/auth/login") || strings.Contains(out, "hunter2!") {
		t.Errorf("error line missing or not redacted: %s", out)
	}
}
