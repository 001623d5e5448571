package bonds

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the whole database to w while the
// database stays in use: bbolt's Tx.WriteTo inside one read transaction,
// which writers do not block. The copy is a database file Open accepts
// (once written with mode 0600). The coalesced UpdateSeen and
// UpdateLockFacts values are written first (one write), so the copy holds
// everything the gateway knows of its locks. It returns the bytes written.
func (db *DB) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bonds: backup: %w", err)
	}
	if err := db.flushSeen(ctx); err != nil {
		return 0, fmt.Errorf("bonds: backup %s: writing pending lock values: %w", db.path, err)
	}
	var n int64
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("bonds: backup %s: %w", db.path, err)
	}
	return n, nil
}

// BackupFile copies the database file at path to dst (mode 0600, written
// to a temporary file, fsynced and renamed in), through a read-only open:
// it works on a file whose schema Open refuses, as long as bbolt can read
// it. With gatewayd running, it times out on the file lock (ErrLocked):
// the daemon's own Backup is the online path.
func BackupFile(ctx context.Context, path, dst string, opts Options) (int64, error) {
	opts = opts.withDefaults()
	if same(path, dst) {
		return 0, fmt.Errorf("bonds: backup %s: the backup would overwrite the database: %w", path, ErrInvalid)
	}
	b, err := openFile(path, opts, true, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.Close() }()
	var n int64
	err = writeFileAtomic(dst, func(w io.Writer) error {
		return guard(func() error {
			return b.View(func(tx *bolt.Tx) error {
				var err error
				n, err = tx.WriteTo(w)
				return err
			})
		})
	})
	if err != nil {
		return 0, fmt.Errorf("bonds: backup %s to %s: %w", path, dst, err)
	}
	return n, nil
}

func same(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	if err1 == nil && err2 == nil {
		return os.SameFile(fa, fb)
	}
	aa, _ := filepath.Abs(a)
	bb, _ := filepath.Abs(b)
	return aa == bb
}

// Compact rewrites the database at src into dst without free pages
// (bbolt.Compact), through a temporary file beside dst (mode 0600),
// fsynced and renamed in; dst may be src. It takes src's lock for
// writing, so it fails with ErrLocked while gatewayd runs; stop gatewayd
// first (renaming over a file another process has open would leave that
// process on the old copy).
func Compact(ctx context.Context, src, dst string, opts Options) error {
	opts = opts.withDefaults()
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("bonds: compact %s: %w", src, err)
	}
	from, err := openFile(src, opts, false, nil)
	if err != nil {
		return err
	}
	defer func() { _ = from.Close() }()
	if err := migrateOpen(from, src, migrations, schemaVersion, opts.Now); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bonds: compact %s: %w", src, err)
	}
	tmp := dst + ".compacting"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bonds: compact %s: %w", src, err)
	}
	to, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: opts.Timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("bonds: compact %s: %w", src, err)
	}
	err = guard(func() error { return bolt.Compact(to, from, 64<<20) })
	if err == nil {
		err = to.View(func(tx *bolt.Tx) error {
			v, err := readVersion(tx)
			if err == nil && v != schemaVersion {
				err = fmt.Errorf("compacted copy has schema %d", v)
			}
			return err
		})
	}
	if cerr := to.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("bonds: compact %s to %s: %w", src, dst, err)
	}
	return nil
}

// Export's JSON. It carries no secrets: no command payloads (the signed
// commands, with their signatures), no result payloads (lock data, user
// lists), no credential bytes (a SHA-256 fingerprint instead). Passkeys
// are never stored at all. Everything else is operator-visible state.
type export struct {
	SchemaVersion int             `json:"schema_version"`
	ExportedAt    time.Time       `json:"exported_at"`
	Locks         []exportLock    `json:"locks"`
	Users         []User          `json:"users"`
	Audit         []exportAudit   `json:"audit"`
	Journal       []exportEntry   `json:"journal"`
	Outbox        []exportOutItem `json:"outbox"`
}

type exportLock struct {
	ID                LockID            `json:"id"`
	CredentialSHA256  string            `json:"credential_sha256,omitempty"`
	Address           string            `json:"address,omitempty"`
	Bond              BondState         `json:"bond"`
	BondedAt          time.Time         `json:"bonded_at,omitzero"`
	LastSeen          time.Time         `json:"last_seen,omitzero"`
	RSSI              int               `json:"rssi,omitempty"`
	Battery           int               `json:"battery,omitempty"`
	Firmware          string            `json:"firmware,omitempty"`
	ClockOffsetMillis int64             `json:"clock_offset_ms"`
	Counters          map[string]uint64 `json:"counters,omitempty"`
	CreatedAt         time.Time         `json:"created_at"`
	UpdatedAt         time.Time         `json:"updated_at"`
}

type exportAudit struct {
	LockID  LockID `json:"lock_id"`
	Seq     uint64 `json:"seq"`
	Head    string `json:"head"`
	Pending int    `json:"pending,omitempty"` // records not yet acknowledged by the broker
}

type exportResult struct {
	State       State     `json:"state"`
	Status      string    `json:"status,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	PayloadSize int       `json:"payload_size"`
	FinishedAt  time.Time `json:"finished_at"`
}

type exportEntry struct {
	ID          CommandID     `json:"id"`
	LockID      LockID        `json:"lock_id"`
	Operator    string        `json:"operator"`
	Operation   string        `json:"operation"`
	NotAfter    time.Time     `json:"not_after,omitzero"`
	PayloadSize int           `json:"payload_size"`
	ReceivedAt  time.Time     `json:"received_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
	State       State         `json:"state"`
	Attempts    int           `json:"attempts"`
	Result      *exportResult `json:"result,omitempty"`
	OutboxSeq   uint64        `json:"outbox_seq,omitempty"`
	AckedAt     time.Time     `json:"acked_at,omitzero"`
}

type exportOutItem struct {
	Seq       uint64    `json:"seq"`
	CommandID CommandID `json:"command_id"`
}

// Export writes the database as one JSON document without secrets (see
// docs/database.md, "Export"), in one read transaction. Unwritten
// UpdateSeen values are not included.
func (db *DB) Export(ctx context.Context, w io.Writer) error {
	var x export
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		x, err = exportTx(ctx, tx, db.now())
		return err
	})
	if err == nil {
		err = writeJSON(w, &x)
	}
	if err != nil {
		return fmt.Errorf("bonds: export %s: %w", db.path, err)
	}
	return nil
}

// ExportFile exports the database file at path through a read-only open.
// The file must be at this build's schema version.
func ExportFile(ctx context.Context, path string, w io.Writer, opts Options) error {
	opts = opts.withDefaults()
	b, err := openFile(path, opts, true, nil)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	var x export
	err = guard(func() error { return exportView(ctx, b, path, opts, &x) })
	if err == nil {
		err = writeJSON(w, &x)
	}
	if err != nil {
		return fmt.Errorf("bonds: export %s: %w", path, err)
	}
	return nil
}

func exportView(ctx context.Context, b *bolt.DB, path string, opts Options, x *export) error {
	return b.View(func(tx *bolt.Tx) error {
		v, err := readVersion(tx)
		if err != nil {
			return corrupt(path, err)
		}
		if v > schemaVersion {
			return fmt.Errorf("schema version %d, this build knows up to %d: %w", v, schemaVersion, ErrSchemaTooNew)
		} else if v < schemaVersion {
			return fmt.Errorf("schema version %d: start gatewayd once to migrate it to %d", v, schemaVersion)
		}
		*x, err = exportTx(ctx, tx, opts.Now().Round(0).UTC())
		return err
	})
}

func writeJSON(w io.Writer, x *export) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(x)
}

func exportTx(ctx context.Context, tx *bolt.Tx, now time.Time) (export, error) {
	x := export{SchemaVersion: schemaVersion, ExportedAt: now,
		Locks: []exportLock{}, Users: []User{}, Audit: []exportAudit{}, Journal: []exportEntry{}, Outbox: []exportOutItem{}}
	err := eachRecord(ctx, tx, bucketLocks, "lock", nil, func(_ []byte, l *Lock) error {
		el := exportLock{ID: l.ID, Address: l.Address, Bond: l.Bond, BondedAt: l.BondedAt, LastSeen: l.LastSeen,
			RSSI: l.RSSI, Battery: l.Battery, Firmware: l.Firmware, ClockOffsetMillis: l.ClockOffset.Milliseconds(),
			Counters: l.Counters, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt}
		if len(l.Credential) > 0 {
			sum := sha256.Sum256(l.Credential)
			el.CredentialSHA256 = hex.EncodeToString(sum[:])
		}
		x.Locks = append(x.Locks, el)
		return nil
	})
	if err == nil {
		err = eachRecord(ctx, tx, bucketUsers, "user", nil, func(_ []byte, u *User) error {
			x.Users = append(x.Users, *u)
			return nil
		})
	}
	if err == nil {
		err = tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
			var c AuditCursor
			if err := decode(v, &c); err != nil || len(k) != 8 {
				return fmt.Errorf("audit %x: bad record", k)
			}
			x.Audit = append(x.Audit, exportAudit{LockID: LockID(k), Seq: c.Seq, Head: hex.EncodeToString(c.Head), Pending: len(c.Pending)})
			return nil
		})
	}
	if err == nil {
		err = eachRecord(ctx, tx, bucketJournal, "journal", decodeEntry, func(_ []byte, e *Entry) error {
			ee := exportEntry{ID: e.ID, LockID: e.LockID, Operator: e.Operator, Operation: e.Operation,
				NotAfter: e.NotAfter, PayloadSize: len(e.Payload), ReceivedAt: e.ReceivedAt, UpdatedAt: e.UpdatedAt,
				State: e.State, Attempts: e.Attempts, OutboxSeq: e.OutboxSeq, AckedAt: e.AckedAt}
			if r := e.Result; r != nil {
				ee.Result = &exportResult{State: r.State, Status: r.Status, Detail: r.Detail, PayloadSize: len(r.Payload), FinishedAt: r.FinishedAt}
			}
			x.Journal = append(x.Journal, ee)
			return nil
		})
	}
	if err == nil {
		err = tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var r Result
			if err := decode(v, &r); err != nil || len(k) != 8 {
				return fmt.Errorf("outbox %x: bad record", k)
			}
			x.Outbox = append(x.Outbox, exportOutItem{Seq: binary.BigEndian.Uint64(k), CommandID: r.CommandID})
			return nil
		})
	}
	return x, err
}

// SaveBackup writes a backup streamed from r (a running daemon's Backup,
// through its admin socket) to dst: a temporary file beside dst, mode 0600,
// fsynced, checked with CheckFile (bbolt's check plus the schema's
// invariants), and only then renamed in. A truncated or corrupt stream
// leaves dst untouched. It returns the bytes written.
func SaveBackup(ctx context.Context, r io.Reader, dst string, opts Options) (int64, error) {
	var n int64
	err := writeFileAtomic(dst, func(w io.Writer) error {
		var err error
		n, err = io.Copy(w, r)
		if err != nil {
			return err
		}
		f, ok := w.(*os.File)
		if !ok {
			return nil
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return CheckFile(ctx, f.Name(), opts)
	})
	if err != nil {
		return 0, fmt.Errorf("bonds: save backup to %s: %w", dst, err)
	}
	return n, nil
}
