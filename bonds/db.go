package bonds

import (
	"context"
	"errors"
	"fmt"
	"github.com/gatewayd/gatewayd/internal/atomicfile"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// Defaults for the zero values of Options.
const (
	DefaultReplayWindow      = 24 * time.Hour
	DefaultTimeout           = 5 * time.Second
	DefaultSeenFlushInterval = time.Minute
	DefaultPruneInterval     = time.Hour
	// maxBatch bounds how many writes go into one transaction.
	maxBatch = 256
)

// Options configures Open. Every zero value is useful.
type Options struct {
	// Logger gets a child logger with subsystem=bonds; nil discards.
	Logger *slog.Logger
	// ReplayWindow is how long a command ID is remembered after it was
	// received (default 24h). It must be at least the longest validity a
	// signed command can have; Prune also keeps every entry until its
	// NotAfter has passed.
	ReplayWindow time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Timeout is how long Open waits for the file lock held by another
	// process before ErrLocked (default 5s; negative: fail at once).
	Timeout time.Duration
	// SeenFlushInterval is how often the coalesced values of UpdateSeen
	// and UpdateLockFacts are written (default 1 min). It is the most
	// last-seen data and lock facts (battery, firmware, clock offset,
	// signers' counters) a power loss can lose.
	SeenFlushInterval time.Duration
	// PruneInterval is how often the journal is pruned in the background
	// (default 1h; negative: never, call Prune yourself).
	PruneInterval time.Duration
	// NoSync skips fsync. For tests that do not test durability only; a
	// crash with NoSync loses acknowledged commands.
	NoSync bool
	// FailCommit is a fault seam for tests of disk faults. When set, it is
	// called before every commit of a write transaction, and an error it
	// returns fails that commit as the file system would (a full disk's
	// ENOSPC, a read-only remount's EROFS, EPERM, EIO): the transaction
	// rolls back and every write in it gets the error (wrapped, so
	// errors.Is finds it). Nil in production.
	FailCommit func() error
	// BeforeCommit and AfterCommit are seams for tests that count a
	// command's commits or stop the process at a chosen step of it
	// (docs/database.md, "Durability"). They are called in the goroutine
	// committing, just before a write transaction commits (after
	// FailCommit) and just after it committed and was fsynced, with the
	// journal entries the transaction wrote, as written (appended, moved,
	// acknowledged; an entry once per write of it; none for a transaction
	// of other records). They must not call the DB. Nil in production.
	BeforeCommit, AfterCommit func(journal []Entry)
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Logger = o.Logger.With("subsystem", "bonds")
	if o.ReplayWindow <= 0 {
		o.ReplayWindow = DefaultReplayWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	} else if o.Timeout < 0 {
		o.Timeout = time.Nanosecond
	}
	if o.SeenFlushInterval <= 0 {
		o.SeenFlushInterval = DefaultSeenFlushInterval
	}
	if o.PruneInterval == 0 {
		o.PruneInterval = DefaultPruneInterval
	}
	return o
}

// DB is the gateway's database. Its methods are safe for concurrent use.
type DB struct {
	path string
	opts Options
	log  *slog.Logger
	bolt *bolt.DB

	reqs chan *request // to the committer
	// commitMu is held by whoever runs commitBatch: the committer, or a
	// lone writer committing in its own goroutine (see write).
	commitMu sync.Mutex

	mu      sync.RWMutex // guards closing and closed against senders on reqs
	closing bool         // Close has begun
	closed  bool         // reqs is closed

	// The journal's ID index (see journal.go): ids maps each command ID in
	// the journal to its received_at; txIDs holds the changes of the
	// transaction the committer is building (idGone marks a removal), and
	// is applied to ids only when that transaction commits.
	idxMu sync.RWMutex
	ids   map[CommandID]int64
	txIDs map[CommandID]int64
	// txWritten are the journal entries the transaction being built wrote,
	// for the commit seams (only with Options.BeforeCommit or AfterCommit).
	txWritten []Entry

	seenMu  sync.Mutex
	seen    map[LockID]seenUpdate // coalesced UpdateSeen and UpdateLockFacts values not yet written
	seenGen uint64                // counts changes to seen

	stop chan struct{} // closes the background loop
	wg   sync.WaitGroup

	// Set once bbolt panicked on the open file (see fail in guard.go).
	failOnce sync.Once
	failErr  atomic.Pointer[error]
	failed   chan struct{}

	commits, writes, seenFlushes atomic.Uint64
	enqueued                     atomic.Uint64 // writes handed to the committer (tests wait on it)
	inflight                     atomic.Int64  // writes waiting for their commit (Progress)

	// health is the outcome of the last commit (health.go).
	health atomic.Pointer[writeHealth]

	// hint is what Open's page walk found unfinished in the journal, for
	// Pending while the file is at the commit walked (pendinghint.go).
	hint atomic.Pointer[pendingHint]
}

// request is one write for the committer: fn runs inside a write
// transaction, possibly more than once (if another write in its batch
// fails, the batch is run again without it), so fn must only touch tx and
// variables it resets itself.
type request struct {
	fn   func(tx *bolt.Tx) error
	done chan error
}

// Stats are counters since Open.
type Stats struct {
	// Commits counts write transactions committed, each one fsync (unless
	// NoSync).
	Commits uint64
	// Writes counts write requests (Append, Transition, Ack, PutLock, ...)
	// that committed.
	Writes uint64
	// SeenFlushes counts writes of coalesced UpdateSeen and
	// UpdateLockFacts values.
	SeenFlushes uint64
	// SeenPending is how many locks have UpdateSeen or UpdateLockFacts
	// values not yet written.
	SeenPending int
}

// Stats returns the counters. Commits/Writes is fsyncs per write.
func (db *DB) Stats() Stats {
	db.seenMu.Lock()
	n := len(db.seen)
	db.seenMu.Unlock()
	return Stats{Commits: db.commits.Load(), Writes: db.writes.Load(), SeenFlushes: db.seenFlushes.Load(), SeenPending: n}
}

// Path returns the database file's path.
func (db *DB) Path() string { return db.path }

// Open opens the database at path, creating it (mode 0600, atomically:
// written beside it and linked in) if it does not exist; its directory must
// exist. It refuses, and never modifies, a file the group or others can
// access (ErrPermissions), a file it cannot read as a bbolt database of
// this schema, including an empty one or one with a garbled page anywhere
// in its tree or freelist (ErrCorrupt: it walks every page in use before
// bbolt opens the file, see checkPages), and a newer schema (ErrSchemaTooNew). An older schema is
// migrated in one transaction. Whether a missing file may be created is
// the caller's policy (the daemon allows it only on a first start).
//
// Open starts the committer (group commit) and the background loop (seen
// flushes, pruning); Close stops them.
func Open(path string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	ix := &idIndex{ids: make(map[CommandID]int64)}
	b, err := openFile(path, opts, false, ix)
	if err != nil {
		return nil, err
	}
	if err := migrateOpen(b, path, migrations, schemaVersion, opts.Now); err != nil {
		_ = b.Close()
		return nil, err
	}
	// The page walk built the ID index on its way (one pass over the
	// journal, not two); it is bbolt's file only if bbolt opened the
	// commit the walk saw (none was made since: no migration, no other
	// process), else the index is read again.
	ids, hint := ix.ids, &pendingHint{txid: ix.txid, keys: ix.pending}
	if !ix.ok || !sameCommit(b, ix) {
		if ids, err = loadIDs(b, path); err != nil {
			_ = b.Close()
			return nil, err
		}
		hint = nil
	}
	db := &DB{
		path: path, opts: opts, log: opts.Logger, bolt: b,
		reqs: make(chan *request, maxBatch),
		ids:  ids, txIDs: make(map[CommandID]int64),
		seen:   make(map[LockID]seenUpdate),
		stop:   make(chan struct{}),
		failed: make(chan struct{}),
	}
	db.hint.Store(hint)
	db.wg.Add(2)
	go db.committer()
	go db.background()
	db.log.Info("database open", "path", path, "schema", schemaVersion)
	return db, nil
}

// Close writes coalesced UpdateSeen values, waits for queued writes,
// stops the goroutines and closes the file. Later calls return ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closing {
		db.mu.Unlock()
		return fmt.Errorf("bonds: close: %w", ErrClosed)
	}
	db.closing = true
	db.mu.Unlock()
	close(db.stop) // the background loop exits
	ferr := db.flushSeen(context.Background())
	db.mu.Lock()
	db.closed = true
	close(db.reqs) // no sender holds mu.RLock now; the committer drains and exits
	db.mu.Unlock()
	db.wg.Wait()
	err := db.bolt.Close()
	if err != nil {
		return fmt.Errorf("bonds: close %s: %w", db.path, err)
	}
	if ferr != nil {
		return fmt.Errorf("bonds: close: %w", ferr)
	}
	db.log.Info("database closed", "path", db.path)
	return nil
}

// write queues fn for the committer and waits until it is committed and
// fsynced, or failed. If ctx ends while waiting, the write may still
// commit; callers that acknowledge on success (Append) treat the error as
// "not acknowledged", and a redelivery then finds the entry (ErrDuplicate).
func (db *DB) write(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.Err(); err != nil {
		return err
	}
	db.inflight.Add(1)
	defer db.inflight.Add(-1)
	r := &request{fn: fn, done: make(chan error, 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	// A lone writer (no commit running, nothing queued) commits in its
	// own goroutine: the same single-write transaction the committer would
	// run, without the two goroutine hand-offs.
	if len(db.reqs) == 0 && db.commitMu.TryLock() {
		if len(db.reqs) == 0 {
			db.commitBatch([]*request{r})
			db.commitMu.Unlock()
			db.mu.RUnlock()
			return <-r.done
		}
		db.commitMu.Unlock()
	}
	select {
	case db.reqs <- r:
		db.enqueued.Add(1)
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// view runs fn in a read transaction, after checking db is open and not
// failed, under guard: a panic fails the database (fail).
func (db *DB) view(fn func(tx *bolt.Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	if err := db.Err(); err != nil {
		return err
	}
	err := guard(func() error { return db.bolt.View(fn) })
	if errors.Is(err, errPanicked) {
		return db.fail(err)
	}
	return err
}

// committer is group commit. It blocks for one request, then takes every
// request already queued (up to maxBatch) and runs them all in one bbolt
// Update: one fsync. A lone writer never waits for a timer (it even
// commits in its own goroutine, see write); under load the requests that
// queue during one fsync share the next.
func (db *DB) committer() {
	defer db.wg.Done()
	batch := make([]*request, 0, maxBatch)
	for {
		r, ok := <-db.reqs
		if !ok {
			return
		}
		db.commitMu.Lock() // waits for a lone writer's inline commit
		batch = append(batch[:0], r)
	fill:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-db.reqs:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.commitBatch(batch)
		db.commitMu.Unlock()
	}
}

// errFnFailed aborts a batch transaction after one write's fn failed.
var errFnFailed = errors.New("a write in the batch failed")

// commitBatch commits batch in one transaction. A write whose fn fails is
// taken out and run alone after the others, so one bad write (a duplicate,
// a bad transition) costs its batch-mates nothing but a re-run. A panic
// (a page bbolt cannot read) fails the database: every write of the batch
// gets ErrCorrupt, and nothing of it commits.
func (db *DB) commitBatch(batch []*request) {
	if err := db.Err(); err != nil {
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	var solo []*request
	for len(batch) > 0 {
		failed := -1
		err := guard(func() error {
			return db.bolt.Update(func(tx *bolt.Tx) error {
				clear(db.txIDs)
				db.txWritten = db.txWritten[:0]
				for i, r := range batch {
					if err := r.fn(tx); err != nil {
						failed = i
						return errFnFailed
					}
				}
				if err := db.commitFault(); err != nil {
					return err
				}
				tx.OnCommit(db.committed)
				return nil
			})
		})
		if errors.Is(err, errPanicked) {
			err = db.fail(err)
			for _, r := range append(batch, solo...) {
				r.done <- err
			}
			return
		}
		if failed >= 0 {
			solo = append(solo, batch[failed])
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err == nil {
			db.writes.Add(uint64(len(batch)))
		} else {
			db.log.Error("commit failed", "writes", len(batch), "err", err)
			db.recordCommit(err)
		}
		for _, r := range batch {
			r.done <- err
		}
		break
	}
	for i, r := range solo {
		err := guard(func() error {
			return db.bolt.Update(func(tx *bolt.Tx) error {
				clear(db.txIDs)
				db.txWritten = db.txWritten[:0]
				if err := r.fn(tx); err != nil {
					return err
				}
				if err := db.commitFault(); err != nil {
					return err
				}
				tx.OnCommit(db.committed)
				return nil
			})
		})
		if errors.Is(err, errPanicked) {
			err = db.fail(err)
			for _, r := range solo[i:] {
				r.done <- err
			}
			return
		}
		if err == nil {
			db.writes.Add(1)
		}
		r.done <- err
	}
}

// commitFault is Options.FailCommit's verdict on the commit about to
// happen (nil without the seam); then Options.BeforeCommit sees it.
func (db *DB) commitFault() error {
	if db.opts.FailCommit != nil {
		if err := db.opts.FailCommit(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	if db.opts.BeforeCommit != nil {
		db.opts.BeforeCommit(db.txWritten)
	}
	return nil
}

// committed runs in the committer when a transaction has committed.
func (db *DB) committed() {
	db.commits.Add(1)
	db.recordCommit(nil)
	if db.opts.AfterCommit != nil {
		db.opts.AfterCommit(db.txWritten)
	}
	if len(db.txIDs) == 0 {
		return
	}
	db.idxMu.Lock()
	for id, ns := range db.txIDs {
		if ns == idGone {
			delete(db.ids, id)
		} else {
			db.ids[id] = ns
		}
	}
	db.idxMu.Unlock()
	clear(db.txIDs)
}

// background flushes coalesced seen values and prunes the journal.
func (db *DB) background() {
	defer db.wg.Done()
	flush := time.NewTicker(db.opts.SeenFlushInterval)
	defer flush.Stop()
	var prune <-chan time.Time
	if db.opts.PruneInterval > 0 {
		t := time.NewTicker(db.opts.PruneInterval)
		defer t.Stop()
		prune = t.C
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-db.stop; cancel() }()
	for {
		select {
		case <-db.stop:
			return
		case <-flush.C:
			if err := db.flushSeen(ctx); err != nil && ctx.Err() == nil {
				db.log.Warn("flushing last-seen values", "err", err)
			}
			db.releaseMapped()
		case <-prune:
			if n, err := db.Prune(ctx); err != nil && ctx.Err() == nil {
				db.log.Warn("pruning the journal", "err", err)
			} else if n > 0 {
				db.log.Info("pruned the journal", "entries", n)
			}
		}
	}
}

// openFile opens path with bbolt after the permission and emptiness
// checks, creating a new database if there is no file. readOnly takes a
// shared lock and never creates.
func openFile(path string, opts Options, readOnly bool, ix *idIndex) (*bolt.DB, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !readOnly:
		if err := create(path, opts); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("bonds: open %s: %w", path, err)
	default:
		if err := checkMode(path, fi); err != nil {
			return nil, err
		}
		if fi.Size() == 0 {
			return nil, corrupt(path, errors.New("the file is empty (0 bytes): gatewayd creates its database atomically, so an empty file was not written by it or was cut off by the file system"))
		}
		if err := checkStructure(path, fi.Size(), readOnly, opts.Timeout, ix); err != nil {
			return nil, err
		}
	}
	b, err := boltOpen(path, &bolt.Options{Timeout: opts.Timeout, ReadOnly: readOnly, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// checkStructure runs checkLength and checkPages while holding the file
// lock bbolt is about to take (shared for readOnly, else exclusive), so
// that a running gatewayd's writes are never read half done: with the
// lock held elsewhere for timeout, it returns ErrLocked as bbolt would.
// The lock is released before bbolt takes its own (a second flock on
// another descriptor would conflict with it); another process writing in
// between writes sound pages.
func checkStructure(path string, size int64, readOnly bool, timeout time.Duration, ix *idIndex) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bonds: open %s: %w", path, err)
	}
	defer f.Close()
	how := syscall.LOCK_EX
	if readOnly {
		how = syscall.LOCK_SH
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK {
			return fmt.Errorf("bonds: open %s: flock: %w", path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bonds: open %s: no lock after %v (is gatewayd running? stop it first): %w", path, timeout, ErrLocked)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()
	if err := checkLength(path, size); err != nil {
		return corrupt(path, err)
	}
	if err := checkPages(path, ix); err != nil {
		return corrupt(path, err)
	}
	return nil
}

// sameCommit reports whether b's newest commit is the one ix was built
// from (the same transaction ID and high-water mark).
func sameCommit(b *bolt.DB, ix *idIndex) bool {
	same := false
	_ = guard(func() error {
		return b.View(func(tx *bolt.Tx) error {
			same = uint64(tx.ID()) == ix.txid && tx.Size() == ix.size
			return nil
		})
	})
	return same
}

// checkLength refuses a file shorter than its own meta page says, before
// bbolt maps it: bbolt reads pages past the end of the mapping (the
// freelist, at open) and the process dies of SIGSEGV or SIGBUS, which no
// recover catches. A backup cut short, or a copy that stopped half way,
// is such a file. Of the two meta pages, the valid one (magic, version,
// checksum) with the higher transaction ID is the one bbolt would use;
// the file must hold its high-water mark of pages. A file with no valid
// meta page is left to bbolt, which refuses it.
func checkLength(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	best, ok := bestMeta(f)
	if !ok {
		return nil
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("the file is %d bytes, but its meta page (transaction %d) says %d pages of %d bytes (%d bytes): it was cut short", size, best.txid, best.pgid, best.pageSize, need)
	}
	return nil
}

// boltOpen maps bbolt's open errors (and panics on garbled pages) onto ours.
func boltOpen(path string, o *bolt.Options) (b *bolt.DB, err error) {
	err = guard(func() error {
		b, err = bolt.Open(path, 0o600, o)
		return err
	})
	switch {
	case errors.Is(err, errPanicked):
		return nil, corrupt(path, err)
	case err == nil:
		return b, nil
	case errors.Is(err, bolterr.ErrTimeout):
		return nil, fmt.Errorf("bonds: open %s: no lock after %v (is gatewayd running? stop it first): %w", path, o.Timeout, ErrLocked)
	case errors.Is(err, os.ErrPermission), errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.EROFS):
		return nil, fmt.Errorf("bonds: open %s: %w", path, err)
	default:
		return nil, corrupt(path, err)
	}
}

// corrupt is ErrCorrupt with the operator's way out.
func corrupt(path string, cause error) error {
	return fmt.Errorf("bonds: open %s: %w: %v. The file was not modified. "+
		"Run `gatewayd db check -db %s` to see what is wrong; "+
		"if it can still be read, save a copy with `gatewayd db backup -db %s FILE`; "+
		"then stop gatewayd and restore the newest good backup over %s (mode 0600). "+
		"gatewayd never re-creates the file by itself, because that would forget every journalled command",
		path, ErrCorrupt, cause, path, path, path)
}

func checkMode(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("bonds: open %s: not a regular file (%v): %w", path, fi.Mode().Type(), ErrPermissions)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("bonds: open %s: mode %#o lets the group or others access it; run `chmod 600 %s`: %w", path, perm, path, ErrPermissions)
	}
	return nil
}

// create writes a new database beside path (path + ".creating", mode
// 0600), with every bucket and the schema version, fsyncs it, links it to
// path and fsyncs the directory. A crash leaves either no file at path or a
// complete one: never an empty file.
func create(path string, opts Options) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("bonds: create %s: directory: %w", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("bonds: create %s: %s is not a directory: %w", path, dir, ErrInvalid)
	}
	tmp := path + ".creating"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bonds: create %s: %w", path, err)
	}
	b, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("bonds: create %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error { return initSchema(tx, opts.Now()) })
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		// A hard link, not a rename: it fails if another process created
		// the database meanwhile, whose file must not be replaced.
		err = os.Link(tmp, path)
		if errors.Is(err, os.ErrExist) {
			_ = os.Remove(tmp)
			return nil
		}
	}
	if err == nil {
		err = os.Remove(tmp)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("bonds: create %s: %w", path, err)
	}
	opts.Logger.Info("created database", "path", path, "schema", schemaVersion)
	return nil
}

// syncDir fsyncs a directory (atomicfile.SyncDir).
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// writeFileAtomic writes a file at path, mode 0600 (atomicfile.Write).
func writeFileAtomic(path string, write func(w io.Writer) error) error {
	return atomicfile.Write(path, 0o600, write)
}
