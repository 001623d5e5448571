package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gatewayd/gatewayd/config"
)

const configUsage = `usage: gatewayd config check [-config PATH]

Reads the configuration and prints every problem in it, each with its
line and column, then makes the daemon's start checks of the files it
names (key files and their modes, the gateway credential, MQTT secrets,
the database's directory). Exits 0 when all is well, 78 when not.
`

func runConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, configUsage)
		return fmt.Errorf("config: want check: %w", errUsage)
	}
	fs := flag.NewFlagSet("gatewayd config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, configUsage) }
	path := fs.String("config", config.DefaultPath, "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("config check: unexpected arguments %q: %w", fs.Args(), errUsage)
	}
	b, err := os.ReadFile(*path)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	c, ps := config.Check(b)
	if c != nil {
		ps = append(ps, config.CheckFiles(c, time.Now())...)
	}
	for _, p := range ps {
		fmt.Fprintf(stdout, "%s: %s\n", *path, p)
	}
	if len(ps) > 0 {
		return fmt.Errorf("%w: %s: %d problem(s)", errConfig, *path, len(ps))
	}
	fmt.Fprintf(stdout, "%s: OK\n", *path)
	return nil
}
