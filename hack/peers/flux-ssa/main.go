// Command flux-ssa drives Flux's apply engine (github.com/fluxcd/pkg/ssa) the way
// kustomize-controller does, so that hack/bench.py can time Flux's engine on the same
// manifests as converge without the controller's Git fetch, kustomize build and
// status bookkeeping around it.
//
//	flux-ssa apply --dir DIR   ResourceManager.ApplyAllStaged of every object;
//	                           prints {"created":N,"configured":N,"unchanged":N,"seconds":F}
//	flux-ssa diff --dir DIR    ResourceManager.Diff of every object, one after the other
//	                           (what `flux diff kustomization` does); prints
//	                           {"changed":N,"unchanged":N,"seconds":F} (and each
//	                           changed object on stderr); exit 1 when something
//	                           changed, 2 on error
//
// The cluster comes from $KUBECONFIG. Every option below is copied from
// kustomize-controller v1.9.6 (the release hack/peers.sh builds, whose go.mod pins
// github.com/fluxcd/pkg/ssa v0.76.2 like this module) with the controller's default
// flags and a Kustomization without spec.force, spec.ignore or spec.commonMetadata.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/clusterreader"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	runtimeClient "github.com/fluxcd/pkg/runtime/client"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	ssautil "github.com/fluxcd/pkg/ssa/utils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// controllerName is the field manager and owner of kustomize-controller
// (main.go: `const controllerName = "kustomize-controller"`).
const controllerName = "kustomize-controller"

// concurrentSSA is kustomize-controller's `--concurrent-ssa` default (main.go).
const concurrentSSA = 4

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := flags.String("dir", "", "directory of *.yaml/*.yml manifests (read recursively)")
	name := flags.String("name", "flux-ssa", "name of the Kustomization the objects are labelled with")
	namespace := flags.String("namespace", "flux-system", "namespace of that Kustomization")
	timeout := flags.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = flags.Parse(os.Args[2:])
	if *dir == "" {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	owner := kustomization{name: *name, namespace: *namespace}
	switch os.Args[1] {
	case "apply":
		if err := runApply(ctx, *dir, owner); err != nil {
			fail(1, err)
		}
	case "diff":
		changed, err := runDiff(ctx, *dir, owner)
		if err != nil {
			fail(2, err)
		}
		if changed {
			os.Exit(1)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: flux-ssa apply|diff --dir DIR [--name N --namespace NS --timeout D]")
	os.Exit(2)
}

func fail(code int, err error) {
	fmt.Fprintf(os.Stderr, "flux-ssa: %v\n", err)
	os.Exit(code)
}

// kustomization names the Kustomization whose owner labels the objects carry.
type kustomization struct{ name, namespace string }

func runApply(ctx context.Context, dir string, owner kustomization) error {
	objects, err := readObjects(dir)
	if err != nil {
		return err
	}
	manager, err := newManager(objects, owner)
	if err != nil {
		return err
	}
	start := time.Now()
	// KustomizationReconciler.apply: objects are normalized before ApplyAllStaged.
	if err := normalize.UnstructuredList(objects); err != nil {
		return err
	}
	changeSet, err := manager.ApplyAllStaged(ctx, objects, applyOptions())
	if err != nil {
		return err
	}
	counts := map[ssa.Action]int{}
	for _, entry := range changeSet.Entries {
		counts[entry.Action]++
	}
	return printJSON(map[string]any{
		"created":    counts[ssa.CreatedAction],
		"configured": counts[ssa.ConfiguredAction],
		"unchanged":  counts[ssa.UnchangedAction],
		"seconds":    time.Since(start).Seconds(),
	})
}

// runDiff is `flux diff kustomization`'s loop (flux2 internal/build/diff.go,
// Builder.Diff): one ResourceManager.Diff per object, one after the other, with the
// `reconcile: disabled` exclusion. The objects are normalized as the controller does
// before applying them, so that a diff right after `flux-ssa apply` is empty.
func runDiff(ctx context.Context, dir string, owner kustomization) (bool, error) {
	objects, err := readObjects(dir)
	if err != nil {
		return false, err
	}
	manager, err := newManager(objects, owner)
	if err != nil {
		return false, err
	}
	start := time.Now()
	if err := normalize.UnstructuredList(objects); err != nil {
		return false, err
	}
	options := ssa.DiffOptions{
		Exclusions: map[string]string{
			fmt.Sprintf("%s/reconcile", kustomizev1.GroupVersion.Group): kustomizev1.DisabledValue,
		},
	}
	changed, unchanged := 0, 0
	var errs []error
	for _, object := range objects {
		entry, _, _, err := manager.Diff(ctx, object, options)
		switch {
		case err != nil:
			errs = append(errs, err)
		case entry.Action == ssa.CreatedAction || entry.Action == ssa.ConfiguredAction:
			fmt.Fprintf(os.Stderr, "%s\n", entry.String())
			changed++
		default:
			unchanged++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	err = printJSON(map[string]any{
		"changed":   changed,
		"unchanged": unchanged,
		"seconds":   time.Since(start).Seconds(),
	})
	return changed > 0, err
}

// newManager builds the ResourceManager of KustomizationReconciler.reconcile (no
// impersonation: the controller's own client, `getClientAndPoller`).
func newManager(objects []*unstructured.Unstructured, owner kustomization) (*ssa.ResourceManager, error) {
	// main.go: clientOptions.BindFlags defaults (--kube-api-qps=50
	// --kube-api-burst=300); GetConfigOrDie turns client-side throttling off when
	// the API server has priority and fairness on, as a 1.34 server does.
	config := runtimeClient.GetConfigOrDie(runtimeClient.Options{QPS: 50, Burst: 300})
	mapper, err := runtimeClient.NewDynamicRESTMapper(config)
	if err != nil {
		return nil, fmt.Errorf("creating the REST mapper: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// The manager's client reads unstructured objects from the API server, not from
	// its cache (controller-runtime's default), like this one.
	kubeClient, err := client.New(config, client.Options{Scheme: scheme, Mapper: mapper})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	// main.go: the DisableStatusPollerCache feature gate is on by default, so the
	// poller reads directly. The controller adds its custom Job status reader, which
	// only matters for health checks of Jobs (not run here).
	poller := polling.NewStatusPoller(kubeClient, mapper, polling.Options{
		ClusterReaderFactory: engine.ClusterReaderFactoryFunc(clusterreader.NewDirectClusterReader),
	})
	manager := ssa.NewResourceManager(kubeClient, poller, ssa.Owner{
		Field: controllerName,
		Group: kustomizev1.GroupVersion.Group,
	})
	manager.SetOwnerLabels(objects, owner.name, owner.namespace)
	manager.SetConcurrency(concurrentSSA)
	return manager, nil
}

// applyOptions are KustomizationReconciler.apply's (internal/controller/
// kustomization_controller.go) for a Kustomization with spec.force false, no
// spec.ignore, no --disallowed-field-managers, no --custom-apply-stage-kinds and the
// MigrateAPIVersion feature gate off (its default).
func applyOptions() ssa.ApplyOptions {
	group := kustomizev1.GroupVersion.Group
	opts := ssa.DefaultApplyOptions()
	opts.Force = false
	opts.ExclusionSelector = map[string]string{
		fmt.Sprintf("%s/reconcile", group): kustomizev1.DisabledValue,
		fmt.Sprintf("%s/ssa", group):       kustomizev1.IgnoreValue,
	}
	opts.IfNotPresentSelector = map[string]string{
		fmt.Sprintf("%s/ssa", group): kustomizev1.IfNotPresentValue,
	}
	opts.ForceSelector = map[string]string{
		fmt.Sprintf("%s/force", group): kustomizev1.EnabledValue,
	}
	opts.CustomStageKinds = nil
	opts.MigrateAPIVersion = false
	opts.Cleanup = ssa.ApplyCleanupOptions{
		Annotations: []string{
			corev1.LastAppliedConfigAnnotation,
			"kustomize.toolkit.fluxcd.io/checksum",
			"fluxcd.io/sync-checksum",
		},
		Labels: []string{"fluxcd.io/sync-gc-mark"},
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "before-first-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: controllerName, OperationType: metav1.ManagedFieldsOperationUpdate},
		},
		Exclusions: map[string]string{
			fmt.Sprintf("%s/ssa", group): kustomizev1.MergeValue,
		},
	}
	return opts
}

// readObjects reads every *.yaml/*.yml under dir (in path order, multi-document),
// as the controller reads its kustomize build output (ssautil.ReadObjects). A
// kustomization.yaml is kustomize's input, not an object, and is skipped.
func readObjects(dir string) ([]*unstructured.Unstructured, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		base := entry.Name()
		ext := filepath.Ext(base)
		if (ext == ".yaml" || ext == ".yml") && strings.TrimSuffix(base, ext) != "kustomization" {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var all bytes.Buffer
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		all.WriteString("\n---\n")
		all.Write(data)
	}
	objects, err := ssautil.ReadObjects(&all)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	if len(objects) == 0 {
		return nil, fmt.Errorf("no objects in *.yaml/*.yml under %s", dir)
	}
	return objects, nil
}

func printJSON(value map[string]any) error {
	line, err := json.Marshal(value)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(line))
	return err
}
