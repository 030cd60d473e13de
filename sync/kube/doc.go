// Package kube is the owned-object writer: it makes the cluster match a set of desired objects
// (ServiceEntries and WorkloadEntries for the serviceentries pipeline, EnvoyFilters for the
// traffic pipeline — any namespaced kind given by GVK and resource) while touching only objects
// Meltemi owns. It knows nothing of what the objects mean.
//
// Controllers call SetGroup as their desired state changes (a group is the complete set of
// objects one key wants: a host's ServiceEntry and WorkloadEntries, the translator's
// EnvoyFilters), AllowDeletes once sources have delivered their first complete snapshots (again
// as more of them do, when Config.HoldDelete holds the objects of sources that have not), and
// Run to start. WaitIdle tells when everything asked for has been written; WaitBacklog and
// HandOverLimit are its pacing, for controllers that hand over no more than it can take.
//
// # Ownership
//
// Every object written carries app.kubernetes.io/managed-by=meltemi (and Config.OwnerLabels).
// An object without it is foreign: it is never modified or deleted. A desired name held by a
// foreign object is refused (meltemi_sync_conflicts_total, a Recorder event) and retried with
// exponential backoff, and at once when the foreign object is deleted.
//
// # Current state
//
// One unfiltered dynamic informer per kind. Unfiltered, because the names held by foreign
// objects must be known before writing (a label-filtered informer would need a GET per create
// to rule them out); one watch rather than a metadata informer plus a label-filtered full one,
// because a single stream gives a single consistent view — two watches can disagree for a
// moment (an object that just lost the ownership label is still owned in one and already gone
// from the other), and every such disagreement would need its own rule. The memory a full
// informer would spend on foreign objects is avoided by a transform that cuts them down to
// apiVersion, kind, name, namespace, uid, resourceVersion and labels before they are cached;
// owned objects lose only managedFields. What remains is the network and decode cost of foreign
// objects' watch events, which are few for ServiceEntries in practice.
//
// # No-op detection
//
// A desired object is normalised (JSON types, ownership labels, metadata reduced to name,
// namespace, labels and annotations) and hashed: SHA-256 over the canonical JSON of its labels,
// its annotations except the hash, and its content (all top-level fields but apiVersion, kind,
// metadata and status), stored as annotation meltemi.io/content-hash. A cached owned object is
// in sync when it carries that hash, the desired labels and annotations, and the desired
// content (values the server adds, such as defaults, are tolerated; changed or missing values
// and lists of another length are drift). In-sync objects cost no API call, so a host restart
// with unchanged registries makes no writes. The reconciler also remembers its own writes until
// the informer shows them, so a Set that arrives before the watch event neither writes twice
// nor is lost.
//
// # Writes
//
// Server-side apply under one field manager. An update is forced (it takes back fields someone
// else changed) and carries the resourceVersion it was decided on, so an object that changed
// meanwhile — possibly no longer ours — fails with 409 and is looked at again. A create (name
// absent from the cache) is not forced: the only way it can meet fields owned by another
// manager is a foreign object created after the cache was read, and then the 409 brings the
// refusal instead of a takeover. Applies use fieldValidation=Ignore: the default makes the API
// server parse the YAML apply body a second time only to produce warnings (about a fifth of
// its cost of an apply); apply rejects fields unknown to a structural schema either way.
//
// Deletes remove owned objects nobody desires, only after AllowDeletes and while
// Config.HoldDelete does not hold them (until then they are counted in
// meltemi_sync_pending_deletes), with UID and resourceVersion preconditions: the
// object deleted is the owned one the decision saw, never one that lost its ownership label or
// was re-created meanwhile.
//
// A work queue deduplicates keys (a burst of Sets on one key makes one write with the latest
// state), retries failures with per-key exponential backoff and never lets one object block
// others. Writes that failed because the API server did not answer are retried as soon as it
// answers again (retry.go), not when their backoff ends. Objects whose JSON exceeds Config.MaxObjectBytes (default 1.5 MiB,
// etcd's request limit) are refused by Set; the caller splits them.
//
// Only namespaced kinds are supported.
package kube
