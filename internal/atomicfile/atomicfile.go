// Package atomicfile owns writing a file so that a crash or a power cut
// leaves either the old file or the whole new one: a temporary file in the
// same directory, fsync, rename, then fsync of the directory (without it,
// the rename itself may be lost). The database's backups and copies
// (bonds) and the key and credential files (config, gatewayctl) use it.
//
// It imports only the standard library.
package atomicfile

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes the file at path with mode perm: write gets the temporary
// file (an *os.File), which is fsynced, renamed over path, and the
// directory fsynced. On any error the temporary file is removed and path
// is untouched.
func Write(path string, perm fs.FileMode, write func(w io.Writer) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		err = write(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// SyncDir fsyncs a directory, making the creations and renames in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
