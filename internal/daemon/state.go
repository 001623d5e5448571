package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/internal/atomicfile"
	"github.com/gatewayd/gatewayd/internal/filetrust"
)

// markerSuffix names the file beside the database that says a database
// was created there: with it present and the database missing, the
// database was lost (and with it the journal and the outbox), which only a
// restore or an explicit -init may follow.
const markerSuffix = ".created"

// openStateDB opens the database at path (with open, bonds.Open's seam),
// once, refusing (errors wrap
// ErrConfig) a state directory, or one above it, that another user can
// change, a database file owned by another user, and a missing database
// unless this is a first start: init (`gatewayd run -init`), or an empty
// state directory (as systemd's StateDirectory= creates it). After a
// successful open, the marker file beside the database records that this
// directory has held one.
func openStateDB(path string, init bool, open func(string, bonds.Options) (*bonds.DB, error), opts bonds.Options, log *slog.Logger) (*bonds.DB, error) {
	dir := filepath.Dir(path)
	if err := checkStateDir(path, dir); err != nil {
		return nil, fmt.Errorf("%w: database.path: %w", ErrConfig, err)
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		first, why := firstStart(path, dir, init)
		if !first {
			return nil, fmt.Errorf("%w: database %s is missing, %s. Starting with a new, empty database would forget "+
				"every journalled command and every result not yet published. Restore the newest backup "+
				"(install -m 0600 -o %s BACKUP %s); or, to start afresh on purpose, run `gatewayd run -init` once, "+
				"or move the state directory %s away (systemd re-creates it empty)",
				ErrConfig, path, why, ownerName(), path, dir)
		}
		log.Info("first start: creating the database", "path", path, "reason", why)
	case err != nil:
		return nil, fmt.Errorf("%w: database: %w", ErrConfig, err)
	default:
		if err := filetrust.CheckFile(path, fi, filetrust.Secret); err != nil && !errors.Is(err, filetrust.ErrNotRegular) {
			return nil, fmt.Errorf("%w: database: %w", ErrConfig, err)
		}
		// bonds.Open refuses what is not a regular file itself.
	}
	db, err := open(path, opts)
	if err != nil {
		return nil, err
	}
	if err := writeMarker(path); err != nil {
		log.Warn("writing the marker beside the database", "path", path+markerSuffix, "err", err)
	}
	return db, nil
}

// checkStateDir checks the database's directory and every one above it
// (internal/filetrust): nobody but root and gatewayd's user may be able
// to replace the database or plant one.
func checkStateDir(path, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state directory: %w (systemd's StateDirectory=gatewayd creates /var/lib/gatewayd)", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	// The directory itself is checked as the parent of path.
	return filetrust.CheckDirs(path)
}

// firstStart says whether a missing database may be created, and why.
func firstStart(path, dir string, init bool) (bool, string) {
	if init {
		return true, "gatewayd run -init"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Sprintf("and its directory cannot be listed (%v)", err)
	}
	var others []string
	for _, e := range ents {
		if e.Name() == filepath.Base(path)+".creating" {
			continue // a creation a crash cut short; bonds removes it
		}
		others = append(others, e.Name())
	}
	if len(others) == 0 {
		return true, "the state directory " + dir + " is empty"
	}
	if len(others) > 5 {
		others = append(others[:5:5], "...")
	}
	if _, err := os.Lstat(path + markerSuffix); err == nil {
		return false, fmt.Sprintf("though %s says gatewayd created one there", path+markerSuffix)
	}
	return false, fmt.Sprintf("and its directory %s is not empty (%s), so this is not a first start", dir, strings.Join(others, ", "))
}

// writeMarker writes the marker beside the database, if it is not there.
func writeMarker(path string) error {
	m := path + markerSuffix
	if _, err := os.Lstat(m); err == nil {
		return nil
	}
	text := fmt.Sprintf("gatewayd opened its database %s here (first on %s).\n"+
		"While this file exists, gatewayd refuses to start without that database:\n"+
		"restore a backup there, or run `gatewayd run -init` to start with an empty one.\n",
		filepath.Base(path), time.Now().UTC().Format(time.RFC3339))
	return atomicfile.Write(m, 0o600, func(w io.Writer) error {
		_, err := io.WriteString(w, text)
		return err
	})
}

// ownerName is the user to own a restored database: the one gatewayd
// runs as.
func ownerName() string {
	id := strconv.Itoa(os.Geteuid())
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}
