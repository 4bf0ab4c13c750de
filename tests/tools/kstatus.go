package main

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// kstatusOf computes the kstatus of one object with cli-utils (what Flux's health checks and
// kapply/kpt use): Current, InProgress, Failed, Terminating, ...
func kstatusOf(raw json.RawMessage) result {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return result{Error: fmt.Sprintf("decoding object: %v", err)}
	}
	r := result{Kind: u.GetKind(), Name: u.GetName()}
	res, err := status.Compute(u)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Status, r.Message = res.Status.String(), res.Message
	return r
}
