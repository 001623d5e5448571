#!/usr/bin/env bash
# Builds gatewayd's Debian packages with nfpm (pinned in go.mod's tool
# block): static binaries (CGO_ENABLED=0, -trimpath) with the version,
# commit and build date set by the linker (internal/version), the unit,
# sysusers and tmpfiles entries, the example configuration as a conffile,
# man pages, the mosquitto and Prometheus examples, and the maintainer
# scripts in deploy/deb (docs/operations.md, "Installing from the package").
#
#   scripts/package.sh                          # amd64, arm64 and armhf (GOARM=7) into dist/
#   scripts/package.sh -arch amd64 -out DIR     # one architecture
#   scripts/package.sh -version 1.2.0           # default: git describe (v stripped), else 0.0.0~git<date>.<commit>
#
# It prints the path of each package it wrote, one a line.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

archs="amd64 arm64 armhf"
out=$repo/dist
version=
while (($#)); do
  case $1 in
    -arch) archs=$2; shift 2 ;;
    -out) out=$2; shift 2 ;;
    -version) version=$2; shift 2 ;;
    -h|-help|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (package.sh -h)" >&2; exit 2 ;;
  esac
done

for arch in $archs; do
  case $arch in
    amd64|arm64|armhf) ;;
    *) echo "package.sh: unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
done

command -v git >/dev/null || { echo "package.sh: git is missing: run scripts/deps.sh" >&2; exit 1; }
command -v gzip >/dev/null || { echo "package.sh: gzip is missing: run scripts/deps.sh" >&2; exit 1; }

# Which build this is. A package never says "(devel)": without git
# (an exported tree) the version and commit must be given.
if ! commit=$(git rev-parse HEAD 2>/dev/null); then
  echo "package.sh: not a git checkout: the commit is unknown; build from a clone" >&2
  exit 1
fi
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  commit+=-dirty
fi
# The build date is the commit's time (or SOURCE_DATE_EPOCH), so that the
# same commit builds the same package.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
if [[ -z $version ]]; then
  if described=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    version=${described#v}
    version=${version//-/+}   # 1.2.0-3-gabcdef -> 1.2.0+3+gabcdef (sorts after 1.2.0)
  else
    version=0.0.0~git$(date -u -d "@$epoch" +%Y%m%d%H%M%S).$(git rev-parse --short=12 HEAD)
  fi
fi
version=${version#v}
if [[ ! $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "package.sh: version $version is not a Debian version (digits first; letters, digits, . + ~)" >&2
  exit 2
fi

# The database schema this build reads and writes, for preinst.
schema=$(go run ./cmd/gatewayd db schema -build)
nfpm=$(go tool -n nfpm)

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# Everything nfpm.yaml names, at the paths it names them.
mkdir -p "$stage/bin" "$stage/man" "$stage/deb" "$stage/systemd" "$stage/config" \
  "$stage/deploy/mosquitto" "$stage/deploy/prometheus" "$stage/deploy/grafana" "$stage/docs"
cp deploy/deb/nfpm.yaml "$stage/"
cp systemd/gatewayd.service systemd/gatewayd.sysusers.conf "$stage/systemd/"
cp deploy/deb/gatewayd.tmpfiles.conf "$stage/deb/"
cp config/gatewayd.example.toml "$stage/config/"
cp deploy/mosquitto/mosquitto.conf deploy/mosquitto/gatewayd.acl "$stage/deploy/mosquitto/"
cp deploy/prometheus/gatewayd-alerts.yml "$stage/deploy/prometheus/"
cp deploy/grafana/gatewayd-fleet.json "$stage/deploy/grafana/"
cp docs/operations.md docs/mqtt.md docs/database.md "$stage/docs/"
for s in preinst postinst prerm postrm; do
  sed -e "s/@VERSION@/$version/g" -e "s/@SCHEMA@/$schema/g" "deploy/deb/$s" >"$stage/deb/$s"
done
for m in gatewayd.8 gatewayctl.1; do
  sed -e "s/@VERSION@/$version/g" "deploy/deb/$m" | gzip -9n >"$stage/man/$m.gz"
done

ldflags="-X github.com/gatewayd/gatewayd/internal/version.Version=$version"
ldflags+=" -X github.com/gatewayd/gatewayd/internal/version.Commit=$commit"
ldflags+=" -X github.com/gatewayd/gatewayd/internal/version.Date=$date"

for arch in $archs; do
  case $arch in
    amd64) goarch=amd64 goarm= ;;
    arm64) goarch=arm64 goarm= ;;
    armhf) goarch=arm goarm=7 ;;
    *) echo "package.sh: unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
  for cmd in gatewayd gatewayctl; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
      go build -trimpath -ldflags "$ldflags" -o "$stage/bin/$cmd" "./cmd/$cmd"
  done
  deb=$out/gatewayd_${version}_${arch}.deb
  (cd "$stage" && VERSION=$version ARCH=$arch "$nfpm" package -f nfpm.yaml -p deb -t "$deb" >/dev/null)
  echo "$deb"
done
