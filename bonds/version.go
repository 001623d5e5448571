package bonds

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the schema version this build reads and writes
// (docs/database.md, "Versions and migrations").
const SchemaVersion = schemaVersion

// FileSchemaVersion returns the schema version recorded in the database
// at path, whatever it is, newer than this build's included. It opens the
// file read-only and changes nothing: the Debian package's preinst asks the
// installed gatewayd with it (`gatewayd db schema`) whether the package
// about to replace it can read the database.
func FileSchemaVersion(path string, opts Options) (int, error) {
	opts = opts.withDefaults()
	b, err := openFile(path, opts, true, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.Close() }()
	var v int
	err = guard(func() error {
		return b.View(func(tx *bolt.Tx) error {
			var err error
			v, err = readVersion(tx)
			return err
		})
	})
	if err != nil {
		return 0, corrupt(path, fmt.Errorf("reading the schema version: %w", err))
	}
	return v, nil
}
