package realbluez

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrHostTools is returned when the host lacks what the tier needs (qemu,
// the apt tools, cpio, zstd, kmod's depmod): scripts/deps.sh installs them.
var ErrHostTools = errors.New("realbluez: host tools missing; run scripts/deps.sh as root")

// HostTools are the commands the image build and boot need.
var HostTools = []string{"qemu-system-x86_64", "apt-get", "apt-cache", "dpkg-deb", "depmod", "cpio", "zstd", "flock"}

// CheckHost reports the missing host tools.
func CheckHost() error {
	var missing []string
	for _, c := range HostTools {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrHostTools, strings.Join(missing, ", "))
	}
	return nil
}

// Image is a built test image: a kernel and an initrd.
type Image struct {
	Dir     string // vmlinuz, initrd
	Kernel  string // the Debian kernel package
	BuildIn time.Duration
}

// BuildImage runs scripts/qemu/build-image.sh (root is the module's
// root) into dir, with bins in /usr/bin and run as /etc/tier/run: one
// guest command per line, run in order.
func BuildImage(ctx context.Context, root, dir string, bins []string, run []string) (*Image, error) {
	start := time.Now()
	runFile := filepath.Join(dir, "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(runFile, []byte(strings.Join(run, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	args := []string{dir}
	for _, b := range bins {
		args = append(args, "--bin", b)
	}
	args = append(args, "--file", runFile+":/etc/tier/run")
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts/qemu/build-image.sh"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("realbluez: build-image.sh: %w\n%s", err, out.String())
	}
	k, _ := os.ReadFile(filepath.Join(dir, "kernel"))
	return &Image{Dir: dir, Kernel: strings.TrimSpace(string(k)), BuildIn: time.Since(start)}, nil
}

// BuildStatic builds a Go command for the guest: CGO_ENABLED=0, static.
func BuildStatic(ctx context.Context, root, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("realbluez: go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// Boot is one boot of an image and what came out of it.
type Boot struct {
	Out     string        // the guest's /out: results.jsonl, logs, btmon.snoop
	Console string        // the serial console
	Wall    time.Duration // qemu's wall time
	RC      string        // the guest's exit status ("0" when every command passed)
}

// BootImage boots img under qemu-system-x86_64 with TCG (never KVM: it
// does not work on these machines), 1 GiB and 2 vCPUs, no network, with
// out shared as the guest's /out over 9p, and the kernel parameters in
// params (tier.eatt=0 and so on). It waits for the guest to power off.
func BootImage(ctx context.Context, img *Image, out string, params ...string) (*Boot, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot", "-net", "none",
		"-kernel", filepath.Join(img.Dir, "vmlinuz"), "-initrd", filepath.Join(img.Dir, "initrd"),
		"-virtfs", "local,path="+out+",mount_tag=out,security_model=none",
		"-append", "console=ttyS0 quiet panic=-1 "+strings.Join(params, " "))
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	b := &Boot{Out: out, Console: console.String(), Wall: time.Since(start)}
	_ = os.WriteFile(filepath.Join(out, "console.log"), console.Bytes(), 0o644)
	rc, rerr := os.ReadFile(filepath.Join(out, "rc"))
	b.RC = strings.TrimSpace(string(rc))
	switch {
	case err != nil:
		return b, fmt.Errorf("realbluez: qemu: %w", err)
	case rerr != nil:
		return b, fmt.Errorf("realbluez: the guest left no exit status (did it boot?)")
	}
	return b, nil
}

// oopsMarkers start the lines a Linux kernel prints when it oopses, and
// the line of a virtual controller whose HCI Reset timed out at start
// (-110, ETIMEDOUT: seen on a machine at load 25; the controller is dead
// for the boot): both are the guest's faults, not ours.
var oopsMarkers = []string{"general protection fault", "BUG: ", "Oops: ", "kernel BUG at", "list_del corruption",
	"Opcode 0x0c03 failed: -110"}

// KernelOops returns the first line of console that reports a kernel
// oops, trimmed, or "" when there is none.
func KernelOops(console string) string {
	for _, line := range strings.Split(console, "\n") {
		for _, m := range oopsMarkers {
			if strings.Contains(line, m) {
				return strings.TrimSpace(line)
			}
		}
	}
	return ""
}

// Results reads the boot's results.jsonl.
func (b *Boot) Results() ([]Result, error) {
	return ReadResults(filepath.Join(b.Out, "results.jsonl"))
}

// ReadResults reads a results file, one JSON Result per line.
func ReadResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("realbluez: %s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// Tail returns the last n lines of the boot's file name (in Out).
func (b *Boot) Tail(name string, n int) string {
	data, err := os.ReadFile(filepath.Join(b.Out, name))
	if err != nil {
		return fmt.Sprintf("(%s: %v)", name, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
