package batch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/client"
)

// countingGateway is a fake gateway that answers every image request with
// n images "image <request> of <n>" and records the n of each request.
type countingGateway struct {
	mu sync.Mutex
	ns []int
}

func (f *countingGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/v1/usage" {
		io.WriteString(w, `{"plan":"elite"}`)
		return
	}
	var req struct {
		N int `json:"n"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	f.ns = append(f.ns, req.N)
	k := len(f.ns)
	f.mu.Unlock()
	var data []map[string]string
	for i := range req.N {
		data = append(data, map[string]string{"b64_json": base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "image %d.%d", k, i+1))})
	}
	json.NewEncoder(w).Encode(map[string]any{"created": 1, "data": data})
}

func (f *countingGateway) requests() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ns)
}

// TestBatchPartialItem: an item with n > 1 whose first images a run wrote
// before it was stopped asks only for the rest: nothing is paid for twice,
// and what is on disk is left as it is.
func TestBatchPartialItem(t *testing.T) {
	for _, tc := range []struct {
		name     string
		there    []string // images on disk before the run
		wantReqs []int    // the n of each image request
	}{
		{"nothing there", nil, []int{3}},
		{"first written", []string{"cats/trio-1.png"}, []int{2}},
		{"two written", []string{"cats/trio-1.png", "cats/trio-3.png"}, []int{1}},
		{"all written", []string{"cats/trio-1.png", "cats/trio-2.png", "cats/trio-3.png"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &countingGateway{}
			srv := httptest.NewServer(f)
			defer srv.Close()
			out := t.TempDir()
			for _, name := range tc.there {
				p := filepath.Join(out, filepath.FromSlash(name))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte("earlier run"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(t.TempDir(), "prompts.txt")
			os.WriteFile(file, []byte(`{"prompt":"three cats","n":3,"file":"cats/trio"}`+"\n"), 0o600)
			var stdout bytes.Buffer
			b := New(nil, &stdout, io.Discard)
			b.Getenv = func(string) string { return "" }
			if err := b.ParseFlags([]string{"--url", srv.URL, "--key", "slk_test", "--model", "sluice-sketch", "--out", out, file}); err != nil {
				t.Fatal(err)
			}
			b.Options = []client.Option{client.WithBackoff(10*time.Millisecond, 100*time.Millisecond)}
			s, err := b.Run(t.Context())
			if err != nil || s.Failed != 0 {
				t.Fatalf("run: %+v, %v\n%s", s, err, stdout.String())
			}
			if got := f.requests(); !slices.Equal(got, tc.wantReqs) {
				t.Fatalf("image requests asked for n = %v, want %v", got, tc.wantReqs)
			}
			k := 0
			for i := 1; i <= 3; i++ {
				name := fmt.Sprintf("cats/trio-%d.png", i)
				got, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(name)))
				if err != nil {
					t.Fatal(err)
				}
				want := "earlier run"
				if !slices.Contains(tc.there, name) {
					k++
					want = fmt.Sprintf("image 1.%d", k)
				}
				if string(got) != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// TestWriteAtomic: the file is whole at its name, no temporary file is
// left, and the directory is synced after the rename, so that the new name
// survives a crash of the machine.
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "a.png")
	var synced []string
	old := syncDir
	t.Cleanup(func() { syncDir = old })
	syncDir = func(d string) error {
		// Called after the rename: the file is there under its name.
		if b, err := os.ReadFile(path); err != nil || string(b) != "whole" {
			t.Errorf("syncDir(%s) before the file is in place: %q, %v", d, b, err)
		}
		synced = append(synced, filepath.Clean(d))
		return old(d)
	}
	if err := writeAtomic(path, []byte("whole")); err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "sub")}; !slices.Equal(synced, want) {
		t.Fatalf("synced %q, want %q", synced, want)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sub"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), TmpSuffix) {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	// A directory that cannot be synced fails the write.
	syncDir = func(string) error { return os.ErrPermission }
	if err := writeAtomic(filepath.Join(dir, "b.png"), []byte("x")); err == nil {
		t.Fatal("writeAtomic succeeded although the directory was not synced")
	}
}
