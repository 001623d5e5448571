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

	"github.com/gatewayd/gatewayd/firmware/internal/dfuvectors"
	"github.com/gatewayd/gatewayd/firmware/internal/vectors"
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
	return vectors.WriteDir(dir, files, os.Stdout)
}
