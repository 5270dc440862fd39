// Command kstatus computes a resource's status as GitOps tools do, with their own code:
//
//	kstatus < resource.json             sigs.k8s.io/cli-utils kstatus (status.Compute), as
//	                                    kstatus-based tools and Flux's default checks read it
//	kstatus flux EXPRS.json < resource.json
//	                                    Flux's healthCheckExprs evaluator
//	                                    (github.com/fluxcd/pkg/runtime/cel), EXPRS being
//	                                    {"current": ..., "inProgress": ..., "failed": ...}
//
// Prints {"status": ..., "message": ...}; exits 1 with the error on stderr when the
// library returns one.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	document, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(document); err != nil {
		fail(err)
	}
	var out result
	switch {
	case len(os.Args) == 1:
		computed, err := status.Compute(obj)
		if err != nil {
			fail(err)
		}
		out = result{computed.Status.String(), computed.Message}
	case len(os.Args) == 3 && os.Args[1] == "flux":
		raw, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err)
		}
		var exprs kustomize.HealthCheckExpressions
		if err := json.Unmarshal(raw, &exprs); err != nil {
			fail(err)
		}
		evaluator, err := fluxcel.NewStatusEvaluator(&exprs)
		if err != nil {
			fail(err)
		}
		computed, err := evaluator.Evaluate(context.Background(), obj)
		if err != nil {
			fail(err)
		}
		out = result{computed.Status.String(), computed.Message}
	default:
		fmt.Fprintln(os.Stderr, "usage: kstatus [flux EXPRS.json] < resource.json")
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
