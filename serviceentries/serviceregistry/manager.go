package serviceregistry

import (
	"context"
	"log/slog"
	"reflect"
	"sync"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/supervisor"
)

// Controller is the part of serviceentries the manager drives: registry state goes to it,
// status and rejections stay with the manager.
type Controller interface {
	// Replace, Upsert and Delete are the registry state (see supervisor.Sink).
	Replace(registry string, services []catalog.Service, keep []string)
	Upsert(svc catalog.Service)
	Delete(registry, key string)
	// Synced records a registry's complete snapshot.
	Synced(registry string)
	// SetRegistries names every configured registry (deletions wait until all have synced)
	// and sets their host-side policies; unusable names registries declared but not runnable
	// (their spec cannot be used): they never sync, so their objects are kept.
	SetRegistries(regs []supervisor.Registration, unusable ...string)
	// RemoveRegistry forgets a registry that is no longer configured.
	RemoveRegistry(name string)
}

// Manager keeps one supervised plugin running per configured registry, and what their
// supervisors report: status, and the latest rejected items.
type Manager struct {
	cfg  supervisor.Config
	ctrl Controller
	log  *slog.Logger

	mu      sync.Mutex
	running map[string]*running

	// rejections has its own lock: Apply holds mu while a supervisor it stops may still be
	// reporting.
	rejections rejectionLog
}

// sink is one registry's supervisor.Sink: state to the controller, the rest to the manager.
type sink struct {
	m    *Manager
	name string
}

func (s sink) Replace(registry string, services []catalog.Service, keep []string) {
	s.m.ctrl.Replace(registry, services, keep)
}
func (s sink) Upsert(svc catalog.Service)  { s.m.ctrl.Upsert(svc) }
func (s sink) Delete(registry, key string) { s.m.ctrl.Delete(registry, key) }

func (s sink) Status(registry string, st supervisor.Status) {
	if st.Synced {
		s.m.ctrl.Synced(registry)
	}
}

func (s sink) Reject(r catalog.Rejection) bool { return s.m.rejections.add(r) }

// Rejections returns the account of a registry's rejected items.
func (m *Manager) Rejections(name string) Rejections { return m.rejections.get(name) }

type running struct {
	reg    supervisor.Registration
	sup    *supervisor.Supervisor
	cancel context.CancelFunc
	done   chan struct{}
}

// NewManager returns a manager starting plugins with cfg and reporting to ctrl.
func NewManager(cfg supervisor.Config, ctrl Controller) *Manager {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, ctrl: ctrl, log: log, running: map[string]*running{}}
}

// Apply makes the running plugins match regs: new registries start, changed ones restart
// (their services stay in place until the new snapshot replaces them), removed ones stop and
// their services are forgotten.
//
// unusable names declared registries whose spec cannot be used and that have no previous
// configuration: nothing runs for them, but the objects they wrote are kept, not taken for
// orphans of a removed registry.
func (m *Manager) Apply(ctx context.Context, regs []supervisor.Registration, unusable ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := make(map[string]supervisor.Registration, len(regs))
	for _, r := range regs {
		want[r.Name] = r
	}
	m.ctrl.SetRegistries(regs, unusable...)
	for name, r := range m.running {
		if w, ok := want[name]; ok && reflect.DeepEqual(w, r.reg) {
			continue
		}
		r.cancel()
		<-r.done
		delete(m.running, name)
		if _, still := want[name]; !still {
			m.log.Info("registry removed; its objects will be deleted", "registry", name)
			m.ctrl.RemoveRegistry(name)
			m.rejections.forget(name)
		} else {
			m.log.Info("registry configuration changed; restarting its plugin", "registry", name)
		}
	}
	for name, reg := range want {
		if _, ok := m.running[name]; ok {
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &running{reg: reg, sup: supervisor.NewSupervisor(m.cfg, reg, sink{m, name}), cancel: cancel, done: make(chan struct{})}
		m.running[name] = r
		go func() {
			defer close(r.done)
			r.sup.Run(rctx)
		}()
	}
}

// Statuses returns the supervisors' statuses by registry name.
func (m *Manager) Statuses() map[string]supervisor.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]supervisor.Status, len(m.running))
	for name, r := range m.running {
		out[name] = r.sup.Status()
	}
	return out
}

// Stop stops every plugin and waits for them.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, r := range m.running {
		r.cancel()
		<-r.done
		delete(m.running, name)
	}
}
