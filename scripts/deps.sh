#!/usr/bin/env bash
# Installs, with apt-get, every system package the test suite needs and the
# machine lacks. Idempotent; safe to run on a fresh Debian machine as root.
# Go modules (staticcheck included, pinned in go.mod's tool block) come from
# the Go module proxy through the go command itself.
#
#   scripts/deps.sh        # everything the test suite needs
#   scripts/deps.sh demo   # only what scripts/demo.sh needs (no qemu tier)
set -euo pipefail
profile=${1:-test}

# command-name:debian-package pairs. Add a line when a test needs a new tool.
need=(
  "git:git"
  "dbus-daemon:dbus-daemon"   # bluez/: a private system bus for the BlueZ emulator
  "mosquitto:mosquitto"       # fleet/broker (internal/mosquittotest) and the daemon demo: a real MQTT broker
  "mosquitto_sub:mosquitto-clients"  # the demo's -serve prints a mosquitto_sub command; cmd/fleetdemo's test runs it
  "chattr:e2fsprogs"          # cmd/faults: EPERM on the database (chattr +i)
)
[[ $profile == demo ]] || need+=(
  "nats-server:nats-server"   # internal/natstest, cmd/fleetsim: a 3-node clustered MQTT broker (docs/scaling.md)
)
[[ $profile == demo ]] || need+=(
  "systemd-analyze:systemd"   # systemd/: verify the unit file
  "promtool:prometheus"       # internal/daemon and deploy/prometheus: lint /metrics, test the alert rules
  "protoc:protobuf-compiler"  # firmware/dfu/dfupb: the drift check regenerates the Go code of dfu-cc.proto
  # bluez/internal/realbluez (scripts/qemu/): real BlueZ under qemu (TCG)
  "qemu-system-x86_64:qemu-system-x86"
  "cpio:cpio"                 # the initramfs archive
  "zstd:zstd"                 # its compression
  "depmod:kmod"               # modules.dep of the extracted kernel
  "dpkg-deb:dpkg"             # extracting the guest's Debian packages
  "apt-get:apt"               # apt-get download, apt-cache depends
  # deploy/deb: build the package (scripts/package.sh), install it into a
  # fresh root with dpkg, check the man pages
  "dpkg:dpkg"
  "gzip:gzip"
  "groff:groff-base"
  "fakeroot:fakeroot"         # only when the tests do not run as root
  "systemd-sysusers:systemd"  # the package's postinst, run chrootless in the test's root
  "systemd-tmpfiles:systemd"
  "runuser:util-linux"
)

# Another apt (unattended-upgrades on a fresh machine) may hold the lock:
# wait for it up to 5 minutes rather than fail.
apt_wait=(-o DPkg::Lock::Timeout=300)

missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  apt-get "${apt_wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real-BlueZ tier downloads its guest's Debian packages: apt needs
# package lists.
if [[ $profile != demo ]] && ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: apt has no package lists; run as root or: sudo apt-get update" >&2
    exit 1
  fi
  apt-get "${apt_wait[@]}" update -qq
fi

command -v go >/dev/null 2>&1 || { echo "deps: Go 1.26 is required (see README)" >&2; exit 1; }
