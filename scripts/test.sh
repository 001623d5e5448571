#!/usr/bin/env bash
# The whole test suite: formatting, go vet, staticcheck (pinned in go.mod),
# then every test, including the RFC 9529 trace, the attack tests, the
# committed test-vector drift check and the fuzz targets' seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

# The real-BlueZ tier's first run downloads and extracts its guest's Debian
# packages (about 100 s on a fresh machine): start that now, beside the
# static checks; its test waits for the cache's lock.
prefetch=$(mktemp -d)
scripts/qemu/build-image.sh "$prefetch" >"$prefetch/log" 2>&1 &
prefetch_pid=$!
trap 'kill $prefetch_pid 2>/dev/null || true; wait $prefetch_pid 2>/dev/null || true; rm -rf "$prefetch"' EXIT

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== staticcheck"
go tool staticcheck ./...

echo "== go mod tidy"
go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit"; exit 1; }

# Each package's ok/FAIL line as it completes, the full output of failed
# tests, and every minute the packages still running (internal/testsummary).
echo "== go test"
go build -o "$prefetch/testsummary" ./internal/testsummary
go test -json -count=1 -race ./... | "$prefetch/testsummary"

# The fault campaign's short form and a 3-minute soak (cmd/faults): real
# processes, faults injected, invariants and resource growth checked.
# Recovery times over goal are reported, not failed on (no -strict).
echo "== fault campaign (short)"
scripts/faults.sh -short
echo "== soak (3 minutes)"
scripts/soak.sh -duration 3m
