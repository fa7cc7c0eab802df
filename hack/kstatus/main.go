// Command kstatus runs the real kstatus library (sigs.k8s.io/cli-utils
// pkg/kstatus/status, the version in hack/versions.env) on Kubernetes objects, so that
// the operator's own re-statement of its rules (operator/kubeloop/health.py) can be
// checked against it (tests/unit/test_kstatus_library.py).
//
// stdin: a JSON array of objects, as the API server returns them.
// stdout: a JSON array with one {"status": ..., "message": ...} per object, in order.
// Where status.Compute returns an error the status is "Unknown" and the message is the
// error, as kstatus pollers report it. Input that is not a JSON array of objects is an
// error: a message on stderr and exit status 2.
//
// Built by hack/build-kstatus.sh in a wrapper module; there is no go.mod here.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) > 1 {
		fail("takes no arguments: a JSON array of objects on stdin, results on stdout")
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	// Decoded as client-go decodes API responses: integers stay int64, which the
	// library's NestedInt64 lookups (generation, observedGeneration) require.
	var input any
	if err := utiljson.Unmarshal(data, &input); err != nil {
		fail("stdin is not valid JSON: %v", err)
	}
	items, ok := input.([]any)
	if !ok {
		fail("stdin must be a JSON array of objects, got %T", input)
	}
	out := make([]result, 0, len(items))
	for i, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			fail("element %d of the input array is not a JSON object (got %T)", i, item)
		}
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		switch {
		case err != nil:
			out = append(out, result{string(status.UnknownStatus), err.Error()})
		case res == nil:
			fail("element %d: status.Compute returned neither a result nor an error", i)
		default:
			out = append(out, result{string(res.Status), res.Message})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fail("writing stdout: %v", err)
	}
}
