#!/usr/bin/env bash
# Boots an image built by build-image.sh, by hand:
#
#   scripts/qemu/boot.sh IMAGEDIR OUTDIR [KERNEL-PARAMS...]   e.g. tier.eatt=0
#
# qemu-system-x86_64 with TCG (KVM does not work on these machines), the
# guest's /out is OUTDIR over 9p; the console goes to OUTDIR/console.log.
# The Go test (bluez/internal/realbluez, BootImage) does the same.
set -euo pipefail
(($# >= 2)) || { echo "usage: boot.sh IMAGEDIR OUTDIR [KERNEL-PARAMS...]" >&2; exit 2; }
IMG=$1 OUT=$2; shift 2
mkdir -p "$OUT"
timeout "${QEMU_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-reboot -net none \
  -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd" \
  -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
  -append "console=ttyS0 quiet panic=-1 $*" > "$OUT/console.log" 2>&1 || true
grep -a 'tier-init' "$OUT/console.log" || true
echo "guest rc: $(cat "$OUT/rc" 2>/dev/null || echo none)"
