// Command genvectors writes the protocol test vectors to firmware/testdata
// (or to the directory given with -dir). Run it from the repository root
// after a deliberate protocol change; TestCommittedVectors fails until the
// committed files match the code again.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/gatewayd/gatewayd/firmware/internal/vectors"
)

func main() {
	dir := flag.String("dir", "firmware/testdata", "output directory")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "genvectors:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := vectors.Files()
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
