package bonds

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestWriteHealth: a fresh database has no commit yet; a probe commits and
// is reported; a closed database says so.
func TestWriteHealth(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	db, err := Open(filepath.Join(t.TempDir(), "g.db"), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.WriteHealth(); err != nil {
		t.Fatal(err)
	}
	before := db.Stats().Commits
	if err := db.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if at, err := db.WriteHealth(); err != nil || !at.Equal(now) || db.Stats().Commits != before+1 {
		t.Errorf("after a probe: %v %v, commits %d -> %d", at, err, before, db.Stats().Commits)
	}
	db.Close()
	if _, err := db.WriteHealth(); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
}
