// kstatus prints the status that sigs.k8s.io/cli-utils' kstatus library (the one Flux and kpt
// wait with) computes for Kubernetes objects, so tests can check what those tools will see.
//
//	kstatus [FILE ...]   (no FILE, or "-": stdin)
//
// Each input is JSON: one object or a List (`kubectl get -o json`). One line per object:
// `<kind>/<name> <Status> <message>`. Exits 1 when an object cannot be read or computed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	files := os.Args[1:]
	if len(files) == 0 {
		files = []string{"-"}
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	ok := true
	for _, f := range files {
		if err := run(f, out); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", f, err)
			ok = false
		}
	}
	if !ok {
		out.Flush()
		os.Exit(1)
	}
}

func run(file string, out io.Writer) error {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	// A stream of JSON documents: kubectl prints one List, a fixture one object.
	dec := json.NewDecoder(r)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		// Through apimachinery's decoder: integers stay int64 (kstatus compares generations).
		obj, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
		if err != nil {
			return err
		}
		var items []*unstructured.Unstructured
		switch o := obj.(type) {
		case *unstructured.Unstructured:
			items = append(items, o)
		case *unstructured.UnstructuredList:
			for i := range o.Items {
				items = append(items, &o.Items[i])
			}
		default:
			return fmt.Errorf("unexpected %T", obj)
		}
		for _, item := range items {
			res, err := status.Compute(item)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", item.GetKind(), item.GetName(), err)
			}
			// One line per object, whatever the message holds.
			msg := strings.ReplaceAll(res.Message, "\n", " ")
			fmt.Fprintf(out, "%s/%s %s %s\n", item.GetKind(), item.GetName(), res.Status, msg)
		}
	}
}
