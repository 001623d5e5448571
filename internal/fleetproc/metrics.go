package fleetproc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// OpenLog opens (appending, creating it 0600) the log file of a child
// process at path. The writer it returns writes to the file and, if echo
// is not nil, to echo too (a verbose run); give both to Group.Start, which
// closes the file once the process has exited.
func OpenLog(path string, echo io.Writer) (io.Writer, *os.File, error) {
	logf, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, err
	}
	var w io.Writer = logf
	if echo != nil {
		w = io.MultiWriter(logf, echo)
	}
	return w, logf, nil
}

// Scrape returns the /metrics page of the listener at addr (host:port),
// waiting for it up to timeout.
func Scrape(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics: %s %v", resp.Status, err)
	}
	return string(b), nil
}
