package fleetproc

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScrape: Scrape returns the page of /metrics, and an error naming the
// status for any other status than 200.
func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("up 1\n"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	body, err := Scrape(context.Background(), addr, time.Minute)
	if err != nil || body != "up 1\n" {
		t.Fatalf("Scrape: %q, %v", body, err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if _, err := Scrape(context.Background(), strings.TrimPrefix(down.URL, "http://"), time.Minute); err == nil ||
		!strings.Contains(err.Error(), "503") {
		t.Errorf("Scrape of a 503: %v, want an error naming the status", err)
	}
}

// TestOpenLog: the log is appended to, and echoed when asked.
func TestOpenLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.log")
	if err := os.WriteFile(path, []byte("before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var echo bytes.Buffer
	w, f, err := OpenLog(path, &echo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "before\nafter\n" || echo.String() != "after\n" {
		t.Errorf("file %q (%v), echo %q", got, err, echo.String())
	}
	w, f, err = OpenLog(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if w != f {
		t.Errorf("OpenLog without echo writes to %T, want the file", w)
	}
}
