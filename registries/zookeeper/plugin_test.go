package zookeeper

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
)

func TestDescribe(t *testing.T) {
	d := New().Describe()
	if d.Kind != "zookeeper" || d.Version == "" {
		t.Fatalf("kind %q version %q", d.Kind, d.Version)
	}
	byName := map[string]sdk.Option{}
	for _, o := range d.Options {
		if o.Description == "" {
			t.Errorf("option %s has no description", o.Name)
		}
		byName[o.Name] = o
	}
	for name, def := range map[string]string{"roots": "dubbo", "mode": "interface", "hostTemplate": dubbo.DefaultHostTemplate, "sessionTimeout": "15s"} {
		if byName[name].Default != def {
			t.Errorf("option %s default = %q, want %q", name, byName[name].Default, def)
		}
	}
	for _, name := range []string{"username", "password"} {
		if !byName[name].Secret {
			t.Errorf("option %s is not secret", name)
		}
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		cfg     sdk.Config
		check   func(t *testing.T, c *config)
		wantErr []string // fields with errors
	}{
		{
			name: "defaults",
			cfg:  sdk.Config{Address: "zk1:2181"},
			check: func(t *testing.T, c *config) {
				if !slices.Equal(c.servers, []string{"zk1:2181"}) || c.chroot != "" || !slices.Equal(c.roots, []string{"dubbo"}) ||
					c.mode != ModeInterface || c.sessionTimeout != 15*time.Second || c.auth != "" {
					t.Fatalf("config = %+v", c)
				}
			},
		},
		{
			name: "ensemble, chroot, everything set",
			cfg: sdk.Config{
				Address: " zk1:2181, zk2 ,[::1]:2182/meltemi/prod/ ",
				Options: map[string]string{"roots": "dubbo, /other/ ,dubbo", "mode": "Both", "hostTemplate": "{{.Interface}}.svc", "sessionTimeout": "30s"},
				Secrets: map[string]string{"username": "u", "password": "p:w"},
			},
			check: func(t *testing.T, c *config) {
				if !slices.Equal(c.servers, []string{"zk1:2181", "zk2:2181", "[::1]:2182"}) {
					t.Fatalf("servers = %v", c.servers)
				}
				if c.chroot != "/meltemi/prod" || c.path("dubbo", "x") != "/meltemi/prod/dubbo/x" {
					t.Fatalf("chroot = %q", c.chroot)
				}
				if !slices.Equal(c.roots, []string{"dubbo", "other"}) || c.mode != ModeBoth || c.sessionTimeout != 30*time.Second || c.auth != "u:p:w" {
					t.Fatalf("config = %+v", c)
				}
			},
		},
		{name: "no address", cfg: sdk.Config{}, wantErr: []string{"address"}},
		{name: "only chroot", cfg: sdk.Config{Address: "/chroot"}, wantErr: []string{"address"}},
		{name: "bad chroot", cfg: sdk.Config{Address: "zk:2181/a//b"}, wantErr: []string{"address"}},
		{name: "bad port", cfg: sdk.Config{Address: "zk:99999"}, wantErr: []string{"address"}},
		{name: "unknown option", cfg: sdk.Config{Address: "zk", Options: map[string]string{"root": "dubbo"}}, wantErr: []string{"root"}},
		{name: "bad mode", cfg: sdk.Config{Address: "zk", Options: map[string]string{"mode": "service"}}, wantErr: []string{"mode"}},
		{name: "empty roots", cfg: sdk.Config{Address: "zk", Options: map[string]string{"roots": " , "}}, wantErr: []string{"roots"}},
		{name: "reserved root", cfg: sdk.Config{Address: "zk", Options: map[string]string{"roots": "app"}}, wantErr: []string{"roots"}},
		{name: "overlapping roots", cfg: sdk.Config{Address: "zk", Options: map[string]string{"roots": "dubbo,dubbo/prod"}}, wantErr: []string{"roots"}},
		{name: "bad root", cfg: sdk.Config{Address: "zk", Options: map[string]string{"roots": "a/../b"}}, wantErr: []string{"roots"}},
		{name: "bad template", cfg: sdk.Config{Address: "zk", Options: map[string]string{"hostTemplate": "{{.Nope}}"}}, wantErr: []string{"hostTemplate"}},
		{name: "bad timeout", cfg: sdk.Config{Address: "zk", Options: map[string]string{"sessionTimeout": "soon"}}, wantErr: []string{"sessionTimeout"}},
		{name: "tiny timeout", cfg: sdk.Config{Address: "zk", Options: map[string]string{"sessionTimeout": "10ms"}}, wantErr: []string{"sessionTimeout"}},
		{name: "password only", cfg: sdk.Config{Address: "zk", Secrets: map[string]string{"password": "p"}}, wantErr: []string{"username"}},
		{name: "username only", cfg: sdk.Config{Address: "zk", Secrets: map[string]string{"username": "u"}}, wantErr: []string{"password"}},
		{name: "colon in username", cfg: sdk.Config{Address: "zk", Secrets: map[string]string{"username": "u:x", "password": "p"}}, wantErr: []string{"username"}},
		{name: "secret as plain option", cfg: sdk.Config{Address: "zk", Options: map[string]string{"password": "hunter2"}}, wantErr: []string{"password"}},
		{
			name:    "every problem at once",
			cfg:     sdk.Config{Options: map[string]string{"mode": "x", "sessionTimeout": "-1s", "roots": ""}},
			wantErr: []string{"address", "mode", "roots", "sessionTimeout"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New().(*Plugin)
			err := p.Configure(context.Background(), tt.cfg)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				var fields []string
				for _, fe := range sdk.AsFieldErrors(err) {
					fields = append(fields, fe.Field)
					for _, s := range tt.cfg.Secrets {
						if strings.Contains(fe.Message, s) && len(s) > 2 {
							t.Fatalf("error message leaks a secret: %q", fe.Message)
						}
					}
				}
				slices.Sort(fields)
				fields = slices.Compact(fields)
				if !slices.Equal(fields, tt.wantErr) {
					t.Fatalf("error fields = %v, want %v (%v)", fields, tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p.config())
		})
	}
}
