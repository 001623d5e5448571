#!/usr/bin/env bash
# The main job, until the daemon exists: a gateway and a lock of a test fleet
# open the secure channel over a simulated BLE link (minimum ATT MTU, with
# reordering and duplication), show what a sniffer sees, and replay the
# attacks of the design brief. Extra flags go to the demo (e.g. -mtu 247).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec go run ./firmware/cmd/channeldemo "$@"
