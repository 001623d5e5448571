#!/usr/bin/env bash
# The fault campaign (cmd/faults, issue 12): mosquitto, a private
# dbus-daemon, bluezemu and `gatewayd run` under a supervisor with the
# systemd unit's restart and watchdog rules; broker, bluetoothd and gatewayd
# SIGKILLs, radio faults, a full disk, EPERM and a read-only start; then the
# invariants (nothing lost, run twice or out of order; db check clean) and
# the recovery times beside their goals. Runs as root (a tmpfs for the
# state directory). Flags go to cmd/faults: -short (about 2 minutes, CI),
# -strict (fail on recovery times over goal), -json FILE, -keep, -v, -n N.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bin/" ./cmd/gatewayd ./cmd/gatewayctl ./cmd/bluezemu ./cmd/faults
"$tmp/bin/faults" -bin "$tmp/bin" "$@"
