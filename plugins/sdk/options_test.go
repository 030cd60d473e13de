package sdk

import (
	"context"
	"slices"
	"testing"
	"time"
)

var testSpecs = []Option{
	{Name: "root", Type: String, Default: "dubbo"},
	{Name: "count", Type: Int, Default: "3"},
	{Name: "enabled", Type: Bool},
	{Name: "timeout", Type: Duration, Default: "5s"},
	{Name: "servers", Type: List, Required: true},
	{Name: "password", Type: String, Secret: true},
}

func TestOptionsValues(t *testing.T) {
	o := NewOptions(testSpecs, Config{
		Options: map[string]string{"count": " 7 ", "enabled": "true", "timeout": "250ms", "servers": " a, ,b ,c,"},
		Secrets: map[string]string{"password": "pw", "unrelated": "x"},
	})
	if err := o.Err(); err != nil {
		t.Fatal(err)
	}
	if got := o.String("root"); got != "dubbo" {
		t.Errorf("root (default) = %q", got)
	}
	if got := o.Int("count"); got != 7 {
		t.Errorf("count = %d", got)
	}
	if !o.Bool("enabled") {
		t.Errorf("enabled = false")
	}
	if got := o.Duration("timeout"); got != 250*time.Millisecond {
		t.Errorf("timeout = %v", got)
	}
	if got := o.List("servers"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("servers = %q", got)
	}
	if got := o.String("password"); got != "pw" {
		t.Errorf("password = %q", got)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		read    func(*Options)
		want    FieldErrors
		wantNil bool
	}{
		{
			name: "required missing",
			cfg:  Config{},
			want: FieldErrors{{"servers", "is required"}},
		},
		{
			name: "unknown option names the known ones",
			cfg:  Config{Options: map[string]string{"servers": "a", "rot": "x"}},
			want: FieldErrors{{"rot", "unknown option; known: count, enabled, password, root, servers, timeout"}},
		},
		{
			name: "secret given as a plain option",
			cfg:  Config{Options: map[string]string{"servers": "a", "password": "hunter2"}},
			want: FieldErrors{{"password", "is a secret: pass it by Secret reference, not as a plain option"}},
		},
		{
			name: "bad typed values, sorted by field",
			cfg:  Config{Options: map[string]string{"servers": "a", "timeout": "-1s", "count": "three", "enabled": "yes please"}},
			read: func(o *Options) { o.Duration("timeout"); o.Int("count"); o.Bool("enabled") },
			want: FieldErrors{
				{"count", `"three" is not an integer`},
				{"enabled", `"yes please" is not true or false`},
				{"timeout", `"-1s" is not a duration such as 5s`},
			},
		},
		{
			name: "plugin's own check",
			cfg:  Config{Options: map[string]string{"servers": "a"}},
			read: func(o *Options) { o.Fail("root", "must not be empty") },
			want: FieldErrors{{"root", "must not be empty"}},
		},
		{
			name:    "empty values read as zero",
			cfg:     Config{Options: map[string]string{"servers": "a", "enabled": "", "count": " "}},
			read:    func(o *Options) { o.Bool("enabled"); o.Int("count") },
			wantNil: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions(testSpecs, tc.cfg)
			if tc.read != nil {
				tc.read(o)
			}
			err := o.Err()
			if tc.wantNil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if got := AsFieldErrors(err); !slices.Equal(got, tc.want) {
				t.Errorf("errors %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFieldErrorsMessage(t *testing.T) {
	err := FieldErrors{{"a", "is bad"}, {"b", "is worse"}}
	if got, want := err.Error(), "invalid configuration: a: is bad; b: is worse"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got := AsFieldErrors(errString("boom")); !slices.Equal(got, FieldErrors{{"", "boom"}}) {
		t.Errorf("plain error became %v", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context reported cancellation")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with a cancelled context reported a full wait")
	}
}
