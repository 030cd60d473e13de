package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/bridge/convert"
	"github.com/meltemi-mesh/meltemi/bridge/serviceentries"
	"github.com/meltemi-mesh/meltemi/bridge/serviceregistry"
	"github.com/meltemi-mesh/meltemi/bridge/store"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

var lookupEnv = os.LookupEnv

const pluginsUsage = "usage: meltemi plugins list [--plugin-dir DIR]\n       meltemi plugins describe [--plugin-dir DIR] KIND"

func pluginsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "describe" {
		return pluginsDescribe(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, pluginsUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("meltemi plugins list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("plugin-dir", defaultPluginDir(), "directory holding meltemi-registry-<kind> binaries")
	if err := fs.Parse(args[1:]); err != nil {
		return flagError(err)
	}
	found, err := supervisor.Discover(*dir)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tVERSION\tSHA256\tCAPABILITIES\tPATH")
	for _, kind := range slices.Sorted(maps.Keys(found)) {
		path := found[kind]
		sum, err := supervisor.FileChecksum(path)
		if err != nil {
			sum = "error: " + err.Error()
		}
		version, caps := "", ""
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		desc, err := supervisor.Describe(dctx, path, "", quiet)
		cancel()
		if err != nil {
			version = "error: " + err.Error()
		} else {
			version, caps = desc.GetVersion(), strings.Join(desc.GetCapabilities(), ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", kind, version, sum, caps, path)
	}
	return tw.Flush()
}

// pluginsDescribe prints what a plugin says about itself, above all the options a
// ServiceRegistry of its kind accepts.
func pluginsDescribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meltemi plugins describe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("plugin-dir", defaultPluginDir(), "directory holding meltemi-registry-<kind> binaries")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, pluginsUsage)
		return errUsage
	}
	kind := fs.Arg(0)
	found, err := supervisor.Discover(*dir)
	if err != nil {
		return err
	}
	path, ok := found[kind]
	if !ok {
		return fmt.Errorf("no plugin for kind %q in %s (found: %s)", kind, *dir, strings.Join(slices.Sorted(maps.Keys(found)), ", "))
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	desc, err := supervisor.Describe(dctx, path, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("describing %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "kind:         %s\nversion:      %s\ncapabilities: %s\npath:         %s\n\noptions:\n",
		desc.GetKind(), desc.GetVersion(), strings.Join(desc.GetCapabilities(), ","), path)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tTYPE\tDEFAULT\tNOTES\tDESCRIPTION")
	for _, o := range desc.GetOptions() {
		var notes []string
		if o.GetRequired() {
			notes = append(notes, "required")
		}
		if o.GetSecret() {
			notes = append(notes, "secret (from credentialsSecretRef)")
		}
		typ := strings.ToLower(strings.TrimPrefix(o.GetType().String(), "OPTION_TYPE_"))
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", o.GetName(), typ, orDash(o.GetDefaultValue()), orDash(strings.Join(notes, ", ")), o.GetDescription())
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// collector is a Writer that keeps desired objects in memory, as the reconciler would apply
// them, for convert.
type collector struct {
	mu     sync.Mutex
	groups map[string][]*unstructured.Unstructured
}

func (c *collector) SetGroup(group string, objs []*unstructured.Unstructured) []error {
	var errs []error
	desired := make([]*unstructured.Unstructured, 0, len(objs))
	for _, obj := range objs {
		d, err := synckube.Desired(obj, nil)
		if err != nil {
			errs = append(errs, &synckube.ObjectError{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), Err: err})
			continue
		}
		desired = append(desired, d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups[group] = desired
	return errs
}

func (c *collector) AllowDeletes() {}

// objects returns every object, ordered by kind and name.
func (c *collector) objects() []*unstructured.Unstructured {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*unstructured.Unstructured
	for _, objs := range c.groups {
		out = append(out, objs...)
	}
	slices.SortFunc(out, func(a, b *unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return out
}

func convertCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("meltemi convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML file of ServiceRegistry objects (required)")
	output := fs.String("o", "yaml", "output format: yaml or json")
	namespace := fs.String("namespace", "meltemi-system", "namespace the ServiceEntries would be written to")
	pluginDir := fs.String("plugin-dir", defaultPluginDir(), "directory holding meltemi-registry-<kind> binaries")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for every registry's first snapshot")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for reading the registries' credentials Secrets (credentialsSecretRef); without it such registries are refused")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if *configFile == "" {
		fmt.Fprintln(stderr, "meltemi convert: --config is required")
		return errUsage
	}
	if *output != "yaml" && *output != "json" {
		return fmt.Errorf("-o must be yaml or json, not %q", *output)
	}
	srs, err := serviceregistry.LoadFile(*configFile)
	if err != nil {
		return err
	}
	if len(srs) == 0 {
		return fmt.Errorf("%s holds no ServiceRegistry", *configFile)
	}
	var secrets kubernetes.Interface
	if *kubeconfig != "" {
		cfg, err := restConfig(*kubeconfig)
		if err != nil {
			return err
		}
		if secrets, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("creating client: %w", err)
		}
	}
	regs, err := serviceregistry.Resolve(ctx, secrets, srs)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	out := &collector{groups: map[string][]*unstructured.Unstructured{}}
	ctrl := serviceentries.New(serviceentries.Config{Convert: convert.Options{Namespace: *namespace}, Logger: log}, store.New(), out)
	mgr := serviceregistry.NewManager(supervisor.Config{PluginDir: *pluginDir, Logger: log}, ctrl)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	go ctrl.Run(ctx)
	mgr.Apply(ctx, regs)
	defer mgr.Stop()
	for !ctrl.DeletesAllowed() {
		// A plugin that cannot start or refuses its options will not do better by retrying.
		for name, st := range mgr.Statuses() {
			if st.Failure == supervisor.ReasonStartFailed || st.Failure == supervisor.ReasonConfigureFailed {
				return fmt.Errorf("registry %s: %s", name, st.Message)
			}
		}
		select {
		case <-ctx.Done():
			var pending []string
			for name, st := range mgr.Statuses() {
				if !st.Synced {
					pending = append(pending, fmt.Sprintf("%s (%s)", name, st.Message))
				}
			}
			return fmt.Errorf("registries did not sync within %s: %s", *timeout, strings.Join(pending, ", "))
		case <-time.After(50 * time.Millisecond):
		}
	}
	objs := out.objects()
	if *output == "json" {
		// One document, as kubectl prints several objects.
		items := make([]any, len(objs))
		for i, obj := range objs {
			items[i] = obj.Object
		}
		return printObject(stdout, map[string]any{"apiVersion": "v1", "kind": "List", "items": items}, "json", 0)
	}
	for i, obj := range objs {
		if err := printObject(stdout, obj.Object, *output, i); err != nil {
			return err
		}
	}
	return nil
}

func printObject(w io.Writer, obj map[string]any, format string, i int) error {
	if format == "json" {
		data, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	data, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	if i > 0 {
		fmt.Fprintln(w, "---")
	}
	_, err = w.Write(data)
	return err
}
