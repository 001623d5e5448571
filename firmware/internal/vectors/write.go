package vectors

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// WriteDir writes files (name → content, as Files returns them) into dir,
// creating it, in name order, and says on out what it wrote. The vector
// generators (firmware/cmd/genvectors, firmware/cmd/gendfu) share it.
func WriteDir(dir string, files map[string][]byte, out io.Writer) error {
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
		fmt.Fprintf(out, "wrote %s (%d bytes)\n", p, len(files[n]))
	}
	return nil
}
