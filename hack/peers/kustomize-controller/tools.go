//go:build tools

// Package tools pins the command hack/peers.sh builds, so that `go mod tidy`
// keeps its dependencies in go.sum.
package tools

import _ "github.com/fluxcd/kustomize-controller"
