package config

import "errors"

// Sentinel errors; match with errors.Is. The wrapping text names the key
// or the file and says what to change.
var (
	// ErrInvalid is returned by Load and Parse when the file is not valid
	// TOML, has a key this build does not know, or a value out of range.
	ErrInvalid = errors.New("invalid configuration")

	// ErrPermissions is returned by LoadKeys, ReadSecret and ReadPublic
	// when a file is not a regular file (a FIFO, a device), when a private
	// key or password file can be read by its group or by others or is
	// owned by another user than gatewayd's, or when a key, credential or
	// certificate file or a directory above it can be changed by a user
	// other than root and gatewayd's, or when gatewayd's user may not read
	// a file or enter a directory above it (internal/filetrust); the text
	// names the user and the chown or chmod that fixes it.
	ErrPermissions = errors.New("file permissions or type refused")

	// ErrKeys is returned by LoadKeys when a key or credential file is
	// missing, larger than it can be, malformed, or does not match the others (the credential
	// is not for this gateway, not issued by a configured root, expired,
	// or certifies a different public key than the private key's).
	ErrKeys = errors.New("gateway keys unusable")
)
