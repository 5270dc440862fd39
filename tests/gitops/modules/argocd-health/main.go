// Command argocd-health runs a health.lua through Argo CD's own Lua health runtime
// (github.com/argoproj/argo-cd/v3/util/lua, the code the application controller runs).
//
// Usage: argocd-health HEALTH_LUA < resource.json
// Prints {"status": ..., "message": ...}; exits 1 (with the error on stderr) when the
// script fails, as Argo CD would then report the resource's health as Unknown.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health HEALTH_LUA < resource.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	document, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(document); err != nil {
		fail(err)
	}
	// UseOpenLibs false: the libraries the application controller gives a health script.
	status, err := lua.VM{}.ExecuteHealthLua(obj, string(script))
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(status); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
