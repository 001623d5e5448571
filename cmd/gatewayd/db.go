package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/internal/admin"
)

// DefaultDB is where the daemon keeps its database.
const DefaultDB = "/var/lib/gatewayd/gatewayd.db"

// DefaultAdminSocket is where the daemon serves its admin socket.
const DefaultAdminSocket = "/run/gatewayd/admin.sock"

const dbUsage = `usage: gatewayd db SUBCOMMAND [-db PATH] [-timeout D] [ARGS]

  backup -db PATH FILE   consistent copy to FILE (temporary file, fsync, check, rename; mode 0600).
                         With gatewayd running, the copy comes online through its admin
                         socket (-socket, default /run/gatewayd/admin.sock); otherwise
                         from the file directly.
  check  -db PATH        bbolt's Check plus the schema's invariants; exit 1 on any problem
  export -db PATH        JSON on stdout: no command or result payloads, no credential bytes
  compact -db PATH [-o DST]  rewrite without free pages (in place unless -o)
  schema -db PATH        the file's schema version, a number (any version, newer ones included;
                         read-only); -build: this build's instead. The package's preinst uses it
  audit-reset -db PATH LOCK  forget how far the lock's audit log was read (16 hex digits), for a
                         lock whose log legitimately started over; with gatewayd stopped,
                         and once its audit entries were published (docs/operations.md)
`

func runDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dbUsage)
		return fmt.Errorf("db: no subcommand: %w", errUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("gatewayd db "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dbUsage) }
	path := fs.String("db", DefaultDB, "database file")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the file lock (a running gatewayd holds it)")
	dst := fs.String("o", "", "compact: write the compacted copy here instead of in place")
	socket := fs.String("socket", DefaultAdminSocket, "backup: a running gatewayd's admin socket")
	build := fs.Bool("build", false, "schema: print the schema version this build reads and writes")
	if sub == "-h" || sub == "-help" || sub == "--help" || sub == "help" {
		fmt.Fprint(stdout, dbUsage)
		return nil
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	opts := bonds.Options{Timeout: *timeout, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	rest := fs.Args()
	want := 0
	if sub == "backup" || sub == "audit-reset" {
		want = 1
	}
	if len(rest) != want {
		fs.Usage()
		return fmt.Errorf("db %s: %d arguments after the flags, want %d: %w", sub, len(rest), want, errUsage)
	}
	switch sub {
	case "backup":
		n, err := admin.Backup(ctx, *socket, rest[0])
		if err == nil {
			fmt.Fprintf(stdout, "backed up the running gatewayd's database (online, through %s) to %s (%d bytes, mode 0600, checked)\n", *socket, rest[0], n)
			return nil
		}
		if !errors.Is(err, admin.ErrUnavailable) {
			return fmt.Errorf("db backup through the running gatewayd: %w", err)
		}
		n, err = bonds.BackupFile(ctx, *path, rest[0], opts)
		if err != nil {
			if errors.Is(err, bonds.ErrLocked) {
				return fmt.Errorf("%w; and no gatewayd answers on %s (pass -socket if its admin socket is elsewhere)", err, *socket)
			}
			return err
		}
		fmt.Fprintf(stdout, "backed up %s to %s (%d bytes, mode 0600)\n", *path, rest[0], n)
	case "check":
		if err := bonds.CheckFile(ctx, *path, opts); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok (bbolt check and schema invariants)\n", *path)
	case "schema":
		if *build {
			fmt.Fprintln(stdout, bonds.SchemaVersion)
			return nil
		}
		v, err := bonds.FileSchemaVersion(*path, opts)
		if err != nil {
			return fmt.Errorf("db schema: %w", err)
		}
		fmt.Fprintln(stdout, v)
	case "export":
		return bonds.ExportFile(ctx, *path, stdout, opts)
	case "compact":
		out := *dst
		if out == "" {
			out = *path
		}
		before, err := os.Stat(*path)
		if err != nil {
			return fmt.Errorf("db compact: %w", err)
		}
		if err := bonds.Compact(ctx, *path, out, opts); err != nil {
			return err
		}
		after, err := os.Stat(out)
		if err != nil {
			return fmt.Errorf("db compact: %w", err)
		}
		fmt.Fprintf(stdout, "compacted %s: %d → %d bytes in %s\n", *path, before.Size(), after.Size(), out)
	case "audit-reset":
		id, err := bonds.ParseLockID(rest[0])
		if err != nil {
			return fmt.Errorf("db audit-reset: %w", err)
		}
		db, err := bonds.Open(*path, opts)
		if err != nil {
			return err
		}
		err = db.ResetAuditCursor(ctx, id)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: the audit log of lock %s is read again from its first entry\n", *path, id)
	default:
		fs.Usage()
		return fmt.Errorf("db: unknown subcommand %q: %w", sub, errUsage)
	}
	return nil
}
