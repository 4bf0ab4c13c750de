// consumers runs this repository's GitOps assets in the real consumers' libraries, for the
// integration tests (tests/gitops.rs, tests/consumers.rs):
//
//	consumers argocd-health SCRIPT < objects.json   # Argo CD health Lua in gopher-lua
//	consumers kstatus < objects.json                # sigs.k8s.io/cli-utils kstatus
//
// The input is one object, a JSON array of objects or a Kubernetes List (`items`). The output
// is a JSON array with one result per object, in input order:
//
//	[{"kind":"EmrWorkspace","name":"prod","status":"Healthy","message":"..."}]
//
// An object the consumer rejects (a Lua error, a kstatus error) gives
// {"status":"","error":"..."} for that object and exit status 1, after all results are printed.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: consumers argocd-health SCRIPT < objects.json | consumers kstatus < objects.json")
	os.Exit(2)
}

// readObjects returns the raw JSON of every object on stdin.
func readObjects(r io.Reader) ([]json.RawMessage, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(data, &arr); err == nil {
		return arr, nil
	}
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("input is neither an object, an array nor a List: %w", err)
	}
	if list.Items != nil {
		return list.Items, nil
	}
	return []json.RawMessage{data}, nil
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	objs, err := readObjects(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var eval func(json.RawMessage) result
	switch os.Args[1] {
	case "argocd-health":
		if len(os.Args) != 3 {
			usage()
		}
		script, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		eval = func(raw json.RawMessage) result { return argoHealth(string(script), raw) }
	case "kstatus":
		eval = kstatusOf
	default:
		usage()
	}
	out := make([]result, 0, len(objs))
	failed := false
	for _, raw := range objs {
		r := eval(raw)
		failed = failed || r.Error != ""
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
