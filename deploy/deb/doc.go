// Package deb holds gatewayd's Debian package: nfpm.yaml (nfpm is pinned
// in go.mod's tool block), the maintainer scripts, the tmpfiles entry and
// the man pages gatewayd.8 and gatewayctl.1. scripts/package.sh builds the
// packages (amd64, arm64, armhf).
//
// Its tests build the amd64 package, install it with the real dpkg into a
// fresh root (dpkg --root, maintainer scripts run chrootless with
// DPKG_ROOT), check the installed files' modes and owners, run
// systemd-analyze verify and security on the unit as installed, upgrade
// it over a populated database, refuse a downgrade to an older schema,
// and purge it, leaving nothing but the state directory
// (docs/operations.md, "Installing from the package").
//
// The package has no Go code of its own; its tests import bonds (to write
// a database) and bbolt (to simulate a newer schema).
package deb
