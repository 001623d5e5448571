#!/usr/bin/env bash
# The main job, until the daemon with its MQTT side exists. Two parts:
#  1. the lock protocol (firmware/cmd/channeldemo): a gateway and a lock of a
#     test fleet open the secure channel over a simulated BLE link (minimum
#     ATT MTU, reordering, duplication), what a sniffer sees, and the attacks
#     of the design brief refused;
#  2. the dock (cmd/dockdemo): a real private dbus-daemon, the BlueZ emulator
#     as bluetoothd with reference locks on its radio, gatewayd's BlueZ
#     client and agent, and the command journal in a real bbolt file:
#     discovery, one-time-passkey bonding, signed commands, replays refused,
#     a bluetoothd crash mid-command without a second bolt move, a wedged
#     adapter power-cycled, bonds reconciled, metrics.
# Extra flags go to the dock demo (e.g. -locks 20 -v).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh demo
go run ./firmware/cmd/channeldemo
echo
exec go run ./cmd/dockdemo "$@"
