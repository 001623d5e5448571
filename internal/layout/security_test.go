package layout

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestSecurityMapCurrent keeps docs/security.md honest: every test it
// names exists, every attack test (TestAttack…) of the repository is named
// there, and the table's count per layer is the number of distinct tests
// its section names.
func TestSecurityMapCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	funcs := testFuncs(t, "../..")

	cited := map[string]bool{}
	ident := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`")
	for _, m := range ident.FindAllStringSubmatch(string(doc), -1) {
		cited[m[1]] = true
	}
	for name := range cited {
		if !funcs[name] {
			t.Errorf("docs/security.md names %s, which no _test.go file defines", name)
		}
	}
	var missing []string
	for name := range funcs {
		if strings.HasPrefix(name, "TestAttack") && !cited[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("attack test %s is not in docs/security.md: add it under its threat", name)
	}

	// The table: | Layer | N |, then one "## Layer" section each.
	row := regexp.MustCompile(`(?m)^\| ([A-Z][A-Za-z ,]+) \| (\d+) \|$`)
	rows := row.FindAllStringSubmatch(string(doc), -1)
	if len(rows) < 7 {
		t.Fatalf("docs/security.md: %d layer rows in the table, want 7", len(rows))
	}
	sections := map[string]string{}
	for _, s := range strings.Split(string(doc), "\n## ")[1:] {
		title, body, _ := strings.Cut(s, "\n")
		sections[title] = body
	}
	for _, r := range rows {
		body, ok := sections[r[1]]
		if !ok {
			t.Errorf("docs/security.md: the table's layer %q has no section", r[1])
			continue
		}
		names := map[string]bool{}
		for _, m := range ident.FindAllStringSubmatch(body, -1) {
			names[m[1]] = true
		}
		if want, _ := strconv.Atoi(r[2]); want != len(names) {
			t.Errorf("docs/security.md: layer %q says %d tests, its section names %d", r[1], want, len(names))
		}
	}
}

// testFuncs returns the names of the Test and Fuzz functions of every
// _test.go file below root.
func testFuncs(t *testing.T, root string) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	out := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoPathsOutsideRepository: docs and code name no file a user of the
// repository does not have (the development machine's shared folder).
func TestNoPathsOutsideRepository(t *testing.T) {
	bad := regexp.MustCompile(`/work/|\.\./shared/|shared/(?:spikes|refs|seed)/`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || path == "../../internal/layout") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".md") || strings.HasSuffix(path, ".sh")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if bad.MatchString(line) {
				t.Errorf("%s:%d names a path outside the repository: %s", strings.TrimPrefix(path, "../../"), i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
