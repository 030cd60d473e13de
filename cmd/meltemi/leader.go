package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/meltemi-mesh/meltemi/api/v1alpha1"
	"github.com/meltemi-mesh/meltemi/serviceentries/vip"
	synckube "github.com/meltemi-mesh/meltemi/sync/kube"
)

// electLeader campaigns for the Lease and calls lead while this replica leads. Losing the
// lease ends the process's context through an error: a replica that may have stale writes in
// flight must not keep writing.
func electLeader(ctx context.Context, kube kubernetes.Interface, namespace, name string, lease time.Duration, log *slog.Logger, lead func(context.Context)) error {
	identity, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("leader election identity: %w", err)
	}
	identity = fmt.Sprintf("%s_%d", identity, os.Getpid())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	lost := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   lease,
		RenewDeadline:   lease * 2 / 3,
		RetryPeriod:     lease / 7,
		ReleaseOnCancel: true,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				log.Info("became leader; writing", "lease", namespace+"/"+name, "identity", identity)
				lead(lctx)
			},
			OnStoppedLeading: func() {
				log.Info("no longer leader", "identity", identity)
				close(lost)
			},
			OnNewLeader: func(id string) {
				if id != identity {
					log.Info("standing by", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(ctx)
	select {
	case <-lost:
		if ctx.Err() == nil {
			return fmt.Errorf("lost leadership of %s/%s", namespace, name)
		}
	default:
	}
	return nil
}

// seedVIPs reads back the virtual IPs of the ServiceEntries already written, so hosts keep
// their addresses across restarts and leader changes.
func seedVIPs(ctx context.Context, dyn dynamic.Interface, namespace string, vips *vip.Allocator) error {
	kind := synckube.ServiceEntryKind()
	gvr := kind.GVK.GroupVersion().WithResource(kind.Resource)
	list, err := dyn.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: v1alpha1.LabelManagedBy + "=" + v1alpha1.ManagedByValue,
	})
	if err != nil {
		return fmt.Errorf("reading existing ServiceEntries for their virtual IPs: %w", err)
	}
	for _, se := range list.Items {
		hosts, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "hosts")
		addrs, _, _ := unstructured.NestedStringSlice(se.Object, "spec", "addresses")
		if len(hosts) == 1 && len(addrs) == 1 {
			vips.Seed(hosts[0], addrs[0])
		}
	}
	return nil
}

// newEventRecorder records Events through the API server until ctx ends.
func newEventRecorder(ctx context.Context, kube kubernetes.Interface) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "meltemi"})
}
