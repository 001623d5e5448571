#!/usr/bin/env bash
# The whole test suite: formatting, go vet, staticcheck (pinned in go.mod),
# then every test, including the RFC 9529 trace, the attack tests, the
# committed test-vector drift check and the fuzz targets' seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== staticcheck"
go tool staticcheck ./...

echo "== go test"
go test -count=1 -race ./...
