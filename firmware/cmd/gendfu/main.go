// Command gendfu writes the DFU test vectors to firmware/testdata/dfu (or
// to the directory given with -dir): a package as nrfutil writes it and
// vectors.json (keys, init packets with the bootloader's answers, a
// transfer's transcript). Run it from the repository root after a
// deliberate change; TestCommittedVectors in firmware/internal/dfuvectors
// fails until the committed files match the code again.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/gatewayd/gatewayd/firmware/internal/dfuvectors"
)

func main() {
	dir := flag.String("dir", "firmware/testdata/dfu", "output directory")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gendfu:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := dfuvectors.Files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s (%d bytes)\n", p, len(files[n]))
	}
	return nil
}
