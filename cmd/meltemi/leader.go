package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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
