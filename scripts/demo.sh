#!/usr/bin/env bash
# The main job. Three parts:
#  1. the fleet (cmd/fleetdemo): the gateway exactly as a dock runs it, as
#     real processes built from this repository: mosquitto as the broker
#     (with deploy/mosquitto's configuration: TLS client certificates, ACLs), a
#     private dbus-daemon, bluezemu as bluetoothd with reference locks,
#     `gatewayd run` (READY=1 over NOTIFY_SOCKET), and an operator driving
#     it with gatewayctl: the key ceremony, commands and their results, the
#     refusals (duplicate, bad_signature, forbidden, malformed), a SIGKILL
#     with commands queued by the broker, metrics, an online backup, a
#     clean stop;
#  2. the lock protocol (firmware/cmd/channeldemo): a gateway and a lock of a
#     test fleet open the secure channel over a simulated BLE link (minimum
#     ATT MTU, reordering, duplication), what a sniffer sees, and the attacks
#     of the design brief refused;
#  3. the dock's parts in one process (cmd/dockdemo): the BlueZ client and
#     agent against the emulator, one-time-passkey bonding, the journal, a
#     bluetoothd crash mid-command without a second bolt move, a wedged
#     adapter power-cycled, bonds reconciled.
# Steps are numbered on across the three parts.
# Extra flags go to the fleet demo (e.g. -v to stream gatewayd's log,
# -keep to keep its directory, -locks 20). With -serve, only the first part
# runs, and its fleet (broker, bluezemu, gatewayd) stays up, with the
# gatewayctl, mosquitto_sub and curl commands to try on it, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bin/" ./cmd/gatewayd ./cmd/gatewayctl ./cmd/bluezemu ./cmd/fleetdemo ./firmware/cmd/channeldemo ./cmd/dockdemo
bin=$tmp/bin

part() { printf '\n######## Part %s of 3: %s\n\n' "$1" "$2"; }
serve=false
for a in "$@"; do [[ $a == -serve || $a == --serve ]] && serve=true; done

step=1
part 1 "the fleet: gatewayd as a dock runs it, driven with gatewayctl (cmd/fleetdemo)"
"$bin/fleetdemo" -bin "$bin" -first "$step" "$@"
if $serve; then
  exit 0
fi
step=$((step + $("$bin/fleetdemo" -steps)))
part 2 "the lock protocol: the secure channel and the attacks (firmware/cmd/channeldemo)"
"$bin/channeldemo" -first "$step"
step=$((step + $("$bin/channeldemo" -steps)))
part 3 "the dock's parts in one process: BlueZ client, bonding, journal, faults (cmd/dockdemo)"
"$bin/dockdemo" -first "$step"
