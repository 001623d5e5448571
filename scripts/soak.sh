#!/usr/bin/env bash
# The soak (cmd/faults -soak): the fault campaign's assembly with steady
# traffic and a fault each minute for -duration D (default 3m, at least
# 3m), sampling gatewayd's RSS, goroutines, fds and D-Bus match rules every
# 10 s; fails on growth after warm-up (median of the last third against
# the second third). Other flags go to cmd/faults (-json FILE, -keep, -v).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=3m
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -duration|--duration) duration=$2; shift 2 ;;
    -duration=*|--duration=*) duration=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
scripts/deps.sh demo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bin/" ./cmd/gatewayd ./cmd/gatewayctl ./cmd/bluezemu ./cmd/faults
"$tmp/bin/faults" -bin "$tmp/bin" -soak "$duration" "${args[@]}"
