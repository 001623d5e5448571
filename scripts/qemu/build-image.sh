#!/usr/bin/env bash
# Builds the real-BlueZ test image (docs/real-bluez.md): a kernel and an
# initramfs for qemu-system-x86_64, from Debian packages only (apt-get
# download + dpkg-deb -x), plus our own static binaries.
#
#   scripts/qemu/build-image.sh OUTDIR [--bin FILE]... [--file SRC:DEST]...
#
# OUTDIR receives vmlinuz and initrd (a cached base archive with the
# kernel modules, busybox, dbus, bluez and btvirt, then an overlay with
# --bin files in /usr/bin and --file files at DEST). Adding a binary to the
# guest is one more --bin. Downloaded .debs and the extracted base are
# cached under $GATEWAYD_QEMU_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/gatewayd-qemu), keyed by the package
# versions, so a rebuild with warm caches takes about a second.
# Needs (scripts/deps.sh installs them): apt-get, dpkg-deb, depmod, cpio,
# zstd, flock.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "build-image: $*" >&2; exit 1; }
(($#)) || die "usage: build-image.sh OUTDIR [--bin FILE]... [--file SRC:DEST]..."
OUT=$1; shift
BINS=() FILES=()
while (($#)); do
  case $1 in
    --bin) BINS+=("$2"); shift 2;;
    --file) FILES+=("$2"); shift 2;;
    *) die "unknown argument $1";;
  esac
done
for c in apt-get apt-cache dpkg-deb depmod cpio zstd flock; do
  command -v $c >/dev/null || die "$c missing: run scripts/deps.sh as root"
done
CACHE=${GATEWAYD_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatewayd-qemu}
mkdir -p "$CACHE/debs" "$OUT"
# One build of the cache at a time (parallel test runs share it).
exec 9>"$CACHE/lock"
flock 9

# 1. Which packages: the kernel linux-image-amd64 depends on; bluez
# (bluetoothd), bluez-test-tools (btvirt), dbus-daemon, busybox-static
# (the guest's shell and tools), mosquitto (the broker of the gateway
# scenarios), and the shared libraries of their dependency closure.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $KPKG ]] || die "apt-cache knows no linux-image-amd64: run apt-get update (scripts/deps.sh)"
KV=${KPKG#linux-image-}
TOP=(bluez bluez-test-tools dbus-daemon busybox-static mosquitto)
LIBS=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "${TOP[@]}" 2>/dev/null |
  grep -E '^(lib[a-z0-9.+-]+|zlib1g)$' | grep -Ev -- '-(perl|data|common|modules|bin)$|^libperl|^libpam|^libsemanage|^libdebian-installer|^libnewt|^libslang|^libtextwrap' | sort -u)
PKGS=("$KPKG" "${TOP[@]}" $LIBS)
# Candidate versions make the cache key.
VERS=$(apt-cache policy "${PKGS[@]}" 2>/dev/null | awk '/^[^ ]/{p=$1} /Candidate:/{print p $2}')
# Bump BASE_REV when the base's contents change (module list, layout).
BASE_REV=4
KEY=$( { echo "$VERS"; echo "$BASE_REV"; } | sha256sum | cut -c1-16)
BASE=$CACHE/base-$KEY
if [[ ! -s $BASE/base.cpio.zst ]]; then
  echo "build-image: building base $KEY ($KPKG, ${#PKGS[@]} packages)" >&2
  rm -rf "$BASE.tmp"; mkdir -p "$BASE.tmp"
  ( cd "$CACHE/debs"
    want=()
    for p in "${PKGS[@]}"; do
      v=$(apt-cache policy "$p" | awk '/Candidate:/{print $2}')
      [[ -n $v && $v != "(none)" ]] || continue
      ls "${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1 || want+=("$p=$v")
    done
    if ((${#want[@]})); then
      apt-get download -q "${want[@]}" >/dev/null || die "apt-get download ${want[*]} failed: run apt-get update (scripts/deps.sh)"
    fi )
  X=$BASE.tmp/x
  mkdir -p "$X"
  for p in "${PKGS[@]}"; do
    v=$(apt-cache policy "$p" | awk '/Candidate:/{print $2}')
    [[ -n $v && $v != "(none)" ]] || continue
    dpkg-deb -x "$CACHE/debs/${p}_${v//:/%3a}_"*.deb "$X"
  done
  depmod -b "$X" "$KV"
  cp "$X/boot/vmlinuz-$KV" "$BASE.tmp/vmlinuz"
  R=$BASE.tmp/root
  mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,out,usr/bin,usr/sbin,usr/libexec/bluetooth} \
    "$R"/{var/lib/bluetooth,etc/bluetooth,etc/dbus-1/system.d,usr/share/dbus-1} "$R/lib/modules/$KV"
  ln -s ../run "$R/var/run"
  cp "$X/bin/busybox" "$R/bin/busybox"
  for a in $("$R/bin/busybox" --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
  for a in modprobe insmod poweroff; do ln -sf ../bin/busybox "$R/sbin/$a"; done
  # Kernel modules: bluetooth, hci_vhci, 9p over virtio (results out), and
  # all of crypto/ (drbg, ecdh_generic, ecc, cmac: LE Secure Connections).
  K=$X/lib/modules/$KV
  MODS=""
  for w in net/bluetooth/bluetooth.ko drivers/bluetooth/hci_vhci.ko fs/9p/9p.ko net/9p/9pnet_virtio.ko drivers/virtio/virtio_pci.ko; do
    line=$(grep "^kernel/$w:" "$K/modules.dep") || die "$w not in $KPKG"
    MODS="$MODS kernel/$w ${line#*:}"
  done
  for m in $(echo $MODS | tr ' ' '\n' | sort -u); do
    mkdir -p "$R/lib/modules/$KV/$(dirname $m)"; cp "$K/$m" "$R/lib/modules/$KV/$m"
  done
  cp -r "$K/kernel/crypto" "$R/lib/modules/$KV/kernel/"
  cp "$K"/modules.order "$K"/modules.builtin* "$R/lib/modules/$KV/"
  depmod -b "$R" "$KV"
  # Binaries with their libraries, resolved inside the extracted packages by
  # their own dynamic loader (not the host's libraries).
  LD=$X/lib64/ld-linux-x86-64.so.2
  LP=$X/lib/x86_64-linux-gnu:$X/usr/lib/x86_64-linux-gnu
  copybin() { # src dest
    mkdir -p "$R$(dirname $2)"; cp "$1" "$R$2"
    "$LD" --library-path "$LP" --list "$1" | awk '/=>/{print $3} /^\t\/lib64/{print $1}' | while read -r l; do
      [[ -n $l && $l != "not" ]] || die "unresolved library of $1"
      case $l in "$X"/*) rel=${l#"$X"};; *) rel=$l; l=$X$l;; esac
      mkdir -p "$R$(dirname "$rel")"; cp -L "$l" "$R$rel"
    done
  }
  "$LD" --library-path "$LP" --list "$X/usr/libexec/bluetooth/bluetoothd" | grep -q 'not found' &&
    die "bluetoothd has unresolved libraries"
  copybin "$X/usr/libexec/bluetooth/bluetoothd" /usr/libexec/bluetooth/bluetoothd
  for b in btvirt btmon btmgmt bluetoothctl dbus-daemon; do copybin "$X/usr/bin/$b" "/usr/bin/$b"; done
  copybin "$X/usr/sbin/mosquitto" /usr/sbin/mosquitto
  mkdir -p "$R/lib64"; cp -L "$LD" "$R/lib64/"
  cp "$X/etc/dbus-1/system.d/bluetooth.conf" "$R/etc/dbus-1/system.d/"
  cp "$X/etc/bluetooth/main.conf" "$R/etc/bluetooth/main.conf"
  cp "$HERE/guest/system.conf" "$R/usr/share/dbus-1/system.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/run/dbus:/bin/false\n' > "$R/etc/passwd"
  printf 'root:x:0:\nmessagebus:x:101:\nbluetooth:x:102:\n' > "$R/etc/group"
  echo 0123456789abcdef0123456789abcdef > "$R/etc/machine-id"
  echo "$KPKG" > "$R/etc/tier-kernel"
  ( cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -T0 -3 ) > "$BASE.tmp/base.cpio.zst"
  rm -rf "$X" "$R"
  rm -rf "$BASE"; mv "$BASE.tmp" "$BASE"
fi

# 2. The overlay: init, guest scripts and our binaries, rebuilt every time.
O=$(mktemp -d); trap 'rm -rf "$O"' EXIT
mkdir -p "$O/usr/bin" "$O/etc/tier"
cp "$HERE/guest/init" "$O/init"
cp "$HERE/guest/restart-bluetoothd" "$HERE/guest/gw-stage" "$O/usr/bin/"
chmod +x "$O/init" "$O/usr/bin/restart-bluetoothd" "$O/usr/bin/gw-stage"
for b in "${BINS[@]}"; do cp "$b" "$O/usr/bin/"; chmod +x "$O/usr/bin/$(basename "$b")"; done
for f in "${FILES[@]}"; do mkdir -p "$O$(dirname "${f#*:}")"; cp "${f%%:*}" "$O${f#*:}"; done
( cd "$O" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -T0 -1 ) > "$OUT/overlay.cpio.zst"
cat "$BASE/base.cpio.zst" "$OUT/overlay.cpio.zst" > "$OUT/initrd"
rm -f "$OUT/overlay.cpio.zst"
cp "$BASE/vmlinuz" "$OUT/vmlinuz"
echo "$KPKG" > "$OUT/kernel"
