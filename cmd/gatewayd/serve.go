package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/internal/daemon"
	"github.com/gatewayd/gatewayd/internal/ratelog"
)

// errConfig is returned when the configuration, keys or database are
// refused; main exits 78 (EX_CONFIG), which the unit does not restart.
var errConfig = errors.New("configuration refused")

// errTemporary is returned when the daemon could not start for a reason
// that may pass (the database's file system is read-only, full or
// failing); main exits 75 (EX_TEMPFAIL), which the unit restarts.
var errTemporary = errors.New("temporarily unable to start")

const runUsage = `usage: gatewayd run [-config PATH] [-init]

Runs the daemon (under systemd: systemd/gatewayd.service). The
configuration is described in config/gatewayd.example.toml.

A missing database is created only on a first start: when its directory
is empty (as systemd's StateDirectory= creates it), or with -init. In a
directory that held one, a missing database was lost, and gatewayd
refuses to start (exit 78): restore a backup, or pass -init once to
start afresh, forgetting every journalled command.
`

func runDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatewayd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, runUsage) }
	path := fs.String("config", config.DefaultPath, "configuration file")
	init := fs.Bool("init", false, "create a missing database even if its directory is not empty (a deliberate fresh start)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("run: unexpected arguments %q: %w", fs.Args(), errUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	// SIGHUP (systemctl reload) reloads what can be reloaded; before
	// this, it killed the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	level := new(slog.LevelVar)
	err = daemon.Run(ctx, daemon.Options{Config: cfg, Logger: newLogger(cfg.Log, level, stderr),
		Init: *init, Reload: hup, LogLevel: level, LoadConfig: func() (*config.Config, error) { return config.Load(*path) }})
	switch {
	case errors.Is(err, daemon.ErrConfig):
		return fmt.Errorf("%w: %w", errConfig, err)
	case errors.Is(err, daemon.ErrTemporary):
		return fmt.Errorf("%w: %w", errTemporary, err)
	}
	return err
}

// newLogger logs to stderr (journald under systemd), holding back repeats
// of the same line for a minute: an SD card wears out.
func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	level.Set(lvl)
	ho := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, ho)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, ho)
	}
	return slog.New(ratelog.New(h, ratelog.Options{}))
}
