// Package config owns gatewayd's configuration file
// (/etc/gatewayd/gatewayd.toml): its format, its defaults, its validation,
// and loading the key files it names (the gateway's credential and private
// key, the fleet roots) with their permission checks.
//
// The file is TOML, decoded strictly: an unknown key is an error that
// names the key, so a typo never silently falls back to a default. Every
// error names the key or file at fault and what to do about it. Secrets
// (the private key, the MQTT password) are read from files, never from the
// TOML itself, and never appear in an error or a log line.
//
// Check reports every problem of a file at once, each with its line and
// column and, for an unknown key, the known key it is nearest to;
// CheckFiles makes the daemon's start checks of the files the
// configuration names (gatewayd config check). KnownKeys lists every key
// with its default, from which docs/operations.md's table is made.
//
// It may import the standard library, github.com/BurntSushi/toml,
// firmware/cred and internal/atomicfile; nothing else of the module.
package config
