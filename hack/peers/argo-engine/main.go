// Command argo-engine drives Argo CD's sync engine (github.com/argoproj/argo-cd/
// gitops-engine/v3: pkg/cache's cluster cache, pkg/engine's Sync over pkg/sync and
// pkg/diff) the way gitops-engine's own agent does, so that hack/bench.py can time
// Argo CD's engine on the same manifests as converge, without the application
// controller's repo-server, Application CRs and Redis around it.
//
//	argo-engine sync --dir DIR --name APP   one sync of every object (Argo CD's
//	                                        defaults: dry-run of every task first,
//	                                        then client-side apply; --server-side
//	                                        for ServerSideApply=true); prints
//	                                        {"tasks":N,"cache_seconds":F,"seconds":F}
//	argo-engine diff --dir DIR --name APP   the comparison a refresh makes
//	                                        (GetManagedLiveObjs + Reconcile +
//	                                        DiffArray); prints {"changed":N,...};
//	                                        exit 1 when something differs, 2 on error
//	argo-engine run --dir DIR --name APP    Argo CD's controller for one
//	                                        Application with automated sync and
//	                                        selfHeal: a sync, then a refresh (the
//	                                        comparison of diff, from the cache) on
//	                                        every update of an owned object in the
//	                                        cluster cache, and a sync when the
//	                                        refresh finds a difference; prints
//	                                        "synced" and "refreshed" lines
//
// The cluster comes from $KUBECONFIG. The cache watches every resource type of the
// cluster, as Argo CD's controller does. Objects are tracked the way Argo CD 3
// tracks them by default: the annotation argocd.argoproj.io/tracking-id.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/cache"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/diff"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/engine"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/sync"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/utils/kube"
)

// trackingAnnotation is Argo CD 3's default resource tracking (annotation).
const trackingAnnotation = "argocd.argoproj.io/tracking-id"

// Argo CD's application controller's client limits: ARGOCD_K8S_CLIENT_QPS and
// ARGOCD_K8S_CLIENT_BURST default to 50 and 100 (util/env in argo-cd v3).
const (
	clientQPS   = 50
	clientBurst = 100
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := flags.String("dir", "", "directory of *.yaml/*.yml manifests (read recursively)")
	name := flags.String("name", "argo-engine", "the application name in the tracking annotation")
	serverSide := flags.Bool("server-side", false, "ServerSideApply=true (Argo CD's default is client-side apply)")
	timeout := flags.Duration("timeout", 30*time.Minute, "give up after this long (sync, diff)")
	_ = flags.Parse(os.Args[2:])
	if *dir == "" {
		usage()
	}
	ctx := context.Background()
	app := application{name: *name, dir: *dir, serverSide: *serverSide}
	switch os.Args[1] {
	case "sync", "diff":
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
		h, err := start(app)
		if err != nil {
			fail(2, err)
		}
		defer h.stop()
		if os.Args[1] == "sync" {
			out, err := h.sync(ctx)
			if err != nil {
				fail(1, err)
			}
			printJSON(out)
			return
		}
		changed, err := h.diff(ctx)
		if err != nil {
			fail(2, err)
		}
		if changed {
			os.Exit(1)
		}
	case "run":
		h, err := start(app)
		if err != nil {
			fail(2, err)
		}
		defer h.stop()
		if err := h.run(ctx); err != nil {
			fail(1, err)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: argo-engine sync|diff|run --dir DIR [--name APP --server-side --timeout D]")
	os.Exit(2)
}

func fail(code int, err error) {
	fmt.Fprintf(os.Stderr, "argo-engine: %v\n", err)
	os.Exit(code)
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

type application struct {
	name, dir  string
	serverSide bool
}

// trackingID is Argo CD's annotation value: <app>:<group>/<kind>:<namespace>/<name>.
func (a application) trackingID(obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	return fmt.Sprintf("%s:%s/%s:%s/%s", a.name, gvk.Group, gvk.Kind, obj.GetNamespace(), obj.GetName())
}

// harness holds the cluster cache (built once, as a running controller has it) and
// the engine over it.
type harness struct {
	app          application
	cache        cache.ClusterCache
	engine       engine.GitOpsEngine
	stop         func()
	cacheSeconds float64
	log          logr.Logger
}

// resourceInfo is what the cache keeps per object beside it: its tracking id.
type resourceInfo struct{ trackingID string }

func start(app application) (*harness, error) {
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	config.QPS, config.Burst = clientQPS, clientBurst
	log := logr.Discard()
	c := cache.NewClusterCache(config,
		cache.SetLogr(log),
		cache.SetPopulateResourceInfoHandler(func(un *unstructured.Unstructured, _ bool) (any, bool) {
			id := un.GetAnnotations()[trackingAnnotation]
			// Argo CD keeps the manifest only of the objects an application owns.
			return &resourceInfo{trackingID: id}, id != ""
		}),
	)
	e := engine.NewEngine(config, c, engine.WithLogr(log))
	started := time.Now()
	stop, err := e.Run()
	if err != nil {
		return nil, err
	}
	return &harness{app: app, cache: c, engine: e, stop: stop, cacheSeconds: time.Since(started).Seconds(), log: log}, nil
}

func (h *harness) target() ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	err := filepath.WalkDir(h.app.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := strings.ToLower(filepath.Ext(path)); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		items, err := kube.SplitYAML(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		objects = append(objects, items...)
		return nil
	})
	for _, obj := range objects {
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[trackingAnnotation] = h.app.trackingID(obj)
		obj.SetAnnotations(annotations)
	}
	return objects, err
}

// isManaged says whether the application owns r: its tracking id names this
// application and r itself. Argo CD checks the second half too (a tracking id
// that names another object was copied, e.g. by the Deployment controller onto
// its ReplicaSets' annotations), so that the status churn of such copies does not
// refresh the application.
func (h *harness) isManaged(r *cache.Resource) bool {
	info, ok := r.Info.(*resourceInfo)
	if !ok {
		return false
	}
	key := r.ResourceKey()
	return info.trackingID == fmt.Sprintf("%s:%s/%s:%s/%s", h.app.name, key.Group, key.Kind, key.Namespace, key.Name)
}

// sync is engine.Sync with the options Argo CD's application controller passes for
// an Application with automated sync and prune, no sync options set
// (controller/sync.go): prune, manifest validation, client-side apply unless
// ServerSideApply=true.
func (h *harness) sync(ctx context.Context) (map[string]any, error) {
	target, err := h.target()
	if err != nil {
		return nil, err
	}
	started := time.Now()
	opts := []sync.SyncOpt{
		sync.WithPrune(true), sync.WithManifestValidation(true), sync.WithLogr(h.log),
		sync.WithServerSideApply(h.app.serverSide),
	}
	if h.app.serverSide {
		opts = append(opts, sync.WithServerSideApplyManager("argocd-controller"))
	}
	results, err := h.engine.Sync(ctx, target, h.isManaged, "bench", "default", opts...)
	if err != nil {
		return nil, err
	}
	byStatus := map[string]int{}
	for _, r := range results {
		byStatus[string(r.Status)]++
	}
	return map[string]any{"objects": len(target), "tasks": len(results), "by_status": byStatus,
		"cache_seconds": h.cacheSeconds, "seconds": time.Since(started).Seconds()}, nil
}

// compare is a refresh: the live objects from the cluster cache, matched to the
// target and diffed as Argo CD's comparison does; no request to the API server.
// The objects that differ are named on stderr.
func (h *harness) compare(ctx context.Context) (changed int, out map[string]any, err error) {
	target, err := h.target()
	if err != nil {
		return 0, nil, err
	}
	started := time.Now()
	live, err := h.cache.GetManagedLiveObjs(target, h.isManaged)
	if err != nil {
		return 0, nil, err
	}
	result := sync.Reconcile(target, live, "default", h.cache)
	diffs, err := diff.DiffArray(ctx, result.Target, result.Live, diff.WithLogr(h.log))
	if err != nil {
		return 0, nil, err
	}
	for i, d := range diffs.Diffs {
		if d.Modified {
			changed++
			if obj := result.Target[i]; obj != nil {
				fmt.Fprintf(os.Stderr, "changed: %s\n", h.app.trackingID(obj))
			}
		}
	}
	return changed, map[string]any{"changed": changed, "unchanged": len(diffs.Diffs) - changed,
		"cache_seconds": h.cacheSeconds, "seconds": time.Since(started).Seconds()}, nil
}

func (h *harness) diff(ctx context.Context) (bool, error) {
	changed, out, err := h.compare(ctx)
	if err != nil {
		return false, err
	}
	printJSON(out)
	return changed > 0, nil
}

// run is the application controller's loop for one Application with automated
// sync and selfHeal (argo-cd controller/appcontroller.go): the cluster cache's
// resource-updated handler requests a refresh of the application
// (handleObjectUpdated → requestAppRefresh), the refresh compares the target with
// the cache (CompareAppState), and an OutOfSync result starts a sync (autoSync).
//
// A refresh, never a sync, is what an event asks for, and no event is dropped:
// the sync's own writes come back as events whose refresh finds nothing to do,
// while an edit made by someone else during a sync (the objects it had already
// applied) is found by the refresh after it. An earlier version synced on every
// event and threw away the events that arrived during a sync, taking them all for
// its own writes: a drift made during a sync was never healed.
//
// Not modelled: Argo CD's self-heal backoff (a second self-heal of the same
// revision waits 2 s, then 6 s, … by default), its periodic refresh
// (timeout.reconciliation, 120 s) and its filter of status-only updates
// (ignoreResourceUpdates): each makes Argo CD slower or cheaper, not this harness
// slower than Argo CD.
func (h *harness) run(ctx context.Context) error {
	refresh := make(chan struct{}, 1)
	unsubscribe := h.cache.OnResourceUpdated(func(newRes, oldRes *cache.Resource, _ map[kube.ResourceKey]*cache.Resource) {
		res := newRes
		if res == nil {
			res = oldRes
		}
		if res != nil && h.isManaged(res) {
			// Coalesced, as the controller's refresh queue coalesces the requests
			// for one application: at most one refresh waits.
			select {
			case refresh <- struct{}{}:
			default:
			}
		}
	})
	defer unsubscribe()
	h.autoSync(ctx)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-refresh:
		}
		changed, out, err := h.compare(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "argo-engine: refresh failed: %v\n", err)
			continue
		}
		printJSON(map[string]any{"refreshed": out})
		if changed > 0 {
			h.autoSync(ctx)
		}
	}
}

// autoSync is one sync of the run loop; a failed sync is reported and the loop
// goes on (the next refresh retries it), as the controller's does.
func (h *harness) autoSync(ctx context.Context) {
	out, err := h.sync(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "argo-engine: sync failed: %v\n", err)
		return
	}
	printJSON(map[string]any{"synced": out})
}
