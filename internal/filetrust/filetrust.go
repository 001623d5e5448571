// Package filetrust owns deciding whether gatewayd may trust a file it
// reads at start (configuration, keys, credentials, fleet roots, the TLS
// files, the database's directory): only a regular file, never a FIFO or a
// device; at most a given size; owned by root or by the user gatewayd runs
// as and not writable by anyone else, nor its directory or any directory
// above it (following symlinks, where they are and where they lead). A
// secret is also unreadable by the group and others and owned by the user
// gatewayd runs as. Every error names the file and the command that fixes
// it.
//
// It imports only the standard library.
package filetrust

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUntrusted is returned when a file or one of its directories can
	// be changed by a user other than root and the one gatewayd runs as
	// (its owner, or its group or others may write it), or a secret can
	// be read by others or is owned by another user.
	ErrUntrusted = errors.New("file not trusted")

	// ErrNotRegular is returned when a path names a FIFO, a device, a
	// socket or a directory where a regular file belongs.
	ErrNotRegular = errors.New("not a regular file")

	// ErrTooLarge is returned when a file is larger than what it holds
	// can be.
	ErrTooLarge = errors.New("file too large")

	// ErrUnreadable is returned when the user gatewayd runs as may not
	// read the file (its mode or owner), or may not enter a directory
	// above it.
	ErrUnreadable = errors.New("file not readable by gatewayd's user")
)

// Kind says how a file is trusted.
type Kind int

const (
	// Public: anyone may read it; only root or gatewayd's user may own
	// it, and nobody else may write it (fleet roots, credential, CA).
	Public Kind = iota
	// Secret: owned by gatewayd's user, mode 0600 or stricter (private
	// keys, passwords).
	Secret
)

// ReadFile reads the file at path, of at most max bytes, after checking
// it and its directories. It never opens a non-regular file, never blocks
// opening one (O_NONBLOCK), checks what it opened (fstat) against what
// it checked, and never reads more than max+1 bytes.
func ReadFile(path string, kind Kind, max int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, unreachable(path, err)
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi)
	}
	if err := CheckDirs(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrPermission) {
		return nil, unreadable(path, fi, kind)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, notRegular(path, st)
	}
	if !os.SameFile(fi, st) {
		return nil, fmt.Errorf("%s was replaced while gatewayd opened it: %w", path, ErrUntrusted)
	}
	if err := CheckFile(path, st, kind); err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, tooLarge(path, st.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, tooLarge(path, int64(len(b)), max)
	}
	return b, nil
}

// CheckFile checks a file's owner and mode (fi is from Stat or fstat)
// for kind.
func CheckFile(path string, fi fs.FileInfo, kind Kind) error {
	if !fi.Mode().IsRegular() {
		return notRegular(path, fi)
	}
	uid, ok := owner(fi)
	if !ok {
		return nil
	}
	perm := fi.Mode().Perm()
	switch kind {
	case Secret:
		if perm&0o077 != 0 {
			return fmt.Errorf("%s is mode %04o, readable by its group or others; run: chmod 600 %s: %w", path, perm, path, ErrUntrusted)
		}
		if me := os.Geteuid(); uid != me {
			return fmt.Errorf("%s is owned by %s, but gatewayd runs as %s, and only it may own a secret; run: chown %s %s: %w",
				path, who(uid), who(me), name(me), path, ErrUntrusted)
		}
	default:
		if perm&0o022 != 0 {
			return fmt.Errorf("%s is mode %04o, writable by its group or others; run: chmod go-w %s: %w", path, perm, path, ErrUntrusted)
		}
		if !trustedOwner(uid) {
			return fmt.Errorf("%s is owned by %s, neither root nor %s that gatewayd runs as; run: chown root %s: %w",
				path, who(uid), who(os.Geteuid()), path, ErrUntrusted)
		}
	}
	return nil
}

// CheckDirs checks every directory above path, from its parent up to /,
// and, if any of them is or goes through a symlink, every directory of
// where it leads: each must be owned by root or gatewayd's user and
// writable by nobody else, unless it is sticky (like /tmp), where nobody
// else can rename or remove what is in it.
func CheckDirs(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	dir := filepath.Dir(abs)
	if err := checkChain(path, dir); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if real != dir {
		return checkChain(path, real)
	}
	return nil
}

func checkChain(path, dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s: %s is not a directory: %w", path, dir, ErrNotRegular)
		}
		if uid, ok := owner(fi); ok {
			perm := fi.Mode().Perm()
			if perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
				return fmt.Errorf("%s: its directory %s is mode %04o, writable by its group or others, who could replace the file; run: chmod go-w %s: %w",
					path, dir, perm, dir, ErrUntrusted)
			}
			if !trustedOwner(uid) {
				return fmt.Errorf("%s: its directory %s is owned by %s, neither root nor %s that gatewayd runs as; run: chown root %s: %w",
					path, dir, who(uid), who(os.Geteuid()), dir, ErrUntrusted)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

func trustedOwner(uid int) bool { return uid == 0 || uid == os.Geteuid() }

func owner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// name is a user's name, or its number if it has none.
func name(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func who(uid int) string {
	if n := name(uid); n != strconv.Itoa(uid) {
		return fmt.Sprintf("user %s (uid %d)", n, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func notRegular(path string, fi fs.FileInfo) error {
	what := "a " + fi.Mode().Type().String()
	switch t := fi.Mode().Type(); {
	case t&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case t&fs.ModeCharDevice != 0:
		what = "a character device"
	case t&fs.ModeDevice != 0:
		what = "a device"
	case t&fs.ModeSocket != 0:
		what = "a socket"
	case t&fs.ModeDir != 0:
		what = "a directory"
	}
	return fmt.Errorf("%s is %s, not a regular file; point the configuration at the file itself: %w", path, what, ErrNotRegular)
}

func tooLarge(path string, n, max int64) error {
	return fmt.Errorf("%s is %d bytes or more, larger than the %d bytes it can hold; check that the configuration names the right file: %w", path, n, max, ErrTooLarge)
}

// unreadable says who cannot read path (fi) and the command that lets it,
// for kind: a secret belongs to gatewayd's user, mode 0600; anything else
// may be read by all (0644), since only its integrity matters.
func unreadable(path string, fi fs.FileInfo, kind Kind) error {
	me := os.Geteuid()
	fix := fmt.Sprintf("chmod 644 %s", path)
	if kind == Secret {
		fix = fmt.Sprintf("chown %s %s && chmod 600 %s", name(me), path, path)
	}
	return fmt.Errorf("%s: gatewayd runs as %s, which may not read it (mode %04o, owner %s); run: %s: %w",
		path, who(me), fi.Mode().Perm(), ownerOf(fi), fix, ErrUnreadable)
}

// unreachable names the directory above path that gatewayd's user may not
// enter (err is the Stat error that said so) and the command that lets it:
// the directory's group becomes the user's, with search permission
// (install -d -m 0750 -g gatewayd, as docs/operations.md has it).
func unreachable(path string, err error) error {
	me := os.Geteuid()
	abs, aerr := filepath.Abs(path)
	if aerr != nil {
		return fmt.Errorf("%s: %w: %w", path, err, ErrUnreadable)
	}
	// From / down: the first directory without search permission.
	var dirs []string
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		fi, serr := os.Stat(d)
		if serr != nil || !fi.IsDir() || canSearch(fi) {
			continue
		}
		group := strconv.Itoa(os.Getegid())
		if g, gerr := user.LookupGroupId(group); gerr == nil {
			group = g.Name
		}
		return fmt.Errorf("%s: gatewayd runs as %s, which may not enter its directory %s (mode %04o, owner %s); run: chgrp %s %s && chmod g+x %s: %w",
			path, who(me), d, fi.Mode().Perm(), ownerOf(fi), group, d, d, ErrUnreadable)
	}
	return fmt.Errorf("%s: gatewayd runs as %s: %w: %w", path, who(me), err, ErrUnreadable)
}

// canSearch reports whether gatewayd's user may enter directory fi.
func canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	me := os.Geteuid()
	if !ok || me == 0 {
		return true
	}
	perm := fi.Mode().Perm()
	if int(st.Uid) == me {
		return perm&0o100 != 0
	}
	if inGroup(int(st.Gid)) {
		return perm&0o010 != 0
	}
	return perm&0o001 != 0
}

func inGroup(gid int) bool {
	if gid == os.Getegid() {
		return true
	}
	gs, _ := os.Getgroups()
	for _, g := range gs {
		if g == gid {
			return true
		}
	}
	return false
}

// ownerOf names a file's owner and group: "root:gatewayd".
func ownerOf(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "unknown"
	}
	group := strconv.Itoa(int(st.Gid))
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return name(int(st.Uid)) + ":" + group
}
