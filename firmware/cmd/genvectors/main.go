// Command genvectors writes the protocol test vectors to firmware/testdata
// (or to the directory given with -dir). Run it from the repository root
// after a deliberate protocol change; TestCommittedVectors fails until the
// committed files match the code again.
package main

import (
	"flag"
	"fmt"
	"os"

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
	return vectors.WriteDir(dir, files, os.Stdout)
}
