package dfu

import "errors"

// Sentinel errors. Every error of this package wraps one of them (match
// with errors.Is); the message around it says which file or field and why,
// never a key or a signature.
var (
	// ErrZip is returned when the package is not a readable zip archive
	// (bad structure, a checksum mismatch, an encrypted or unsupported
	// entry, a duplicated file name).
	ErrZip = errors.New("dfu: not a valid zip archive")

	// ErrTooLarge is returned when the package, one of its files or the
	// number of its files exceeds a limit, whatever the zip headers claim
	// (zip bombs), or when an image does not fit the lock's bank.
	ErrTooLarge = errors.New("dfu: too large")

	// ErrFileName is returned when a file name in the zip or the manifest
	// is not a plain name (a path, "..", an absolute or hidden name):
	// path traversal.
	ErrFileName = errors.New("dfu: file name not allowed")

	// ErrMissingFile is returned when manifest.json or a file it names is
	// not in the zip.
	ErrMissingFile = errors.New("dfu: missing file")

	// ErrUnexpectedFile is returned when the zip holds a file the manifest
	// does not name.
	ErrUnexpectedFile = errors.New("dfu: unexpected file")

	// ErrManifest is returned when manifest.json is not the manifest
	// nrfutil writes (bad JSON, unknown keys, no image, an image without
	// bin_file or dat_file, two images sharing a file).
	ErrManifest = errors.New("dfu: malformed manifest")

	// ErrInitPacket is returned when an init packet (.dat) is not a
	// well-formed dfu.Packet within the bootloader's limits (truncated
	// protobuf, missing required fields, both command and signed_command,
	// a repeated init command, a field beyond its nanopb size).
	ErrInitPacket = errors.New("dfu: malformed init packet")

	// ErrInitCommand is returned when the init command lacks what its
	// firmware type needs (type, hw_version, fw_version, the size of the
	// image) or has a type this fleet's bootloader does not take, or its
	// type does not match the manifest's image.
	ErrInitCommand = errors.New("dfu: invalid init command")

	// ErrUnsigned is returned when an init packet carries no signature.
	ErrUnsigned = errors.New("dfu: init packet not signed")

	// ErrSignatureType is returned when an init packet is signed with
	// another algorithm than ECDSA P-256/SHA-256.
	ErrSignatureType = errors.New("dfu: unsupported signature type")

	// ErrSignature is returned when an init packet's signature does not
	// verify under the fleet's DFU key (a wrong, altered or another
	// fleet's signature).
	ErrSignature = errors.New("dfu: signature does not verify")

	// ErrHashType is returned when an init packet names another firmware
	// hash than SHA-256.
	ErrHashType = errors.New("dfu: unsupported hash type")

	// ErrHash is returned when the firmware's SHA-256 differs from the
	// hash its init packet carries (a corrupted or substituted image).
	ErrHash = errors.New("dfu: firmware hash mismatch")

	// ErrSize is returned when the size an init packet declares differs
	// from the firmware's size.
	ErrSize = errors.New("dfu: firmware size mismatch")

	// ErrHWVersion is returned when an init packet's hw_version is not the
	// lock's hardware version.
	ErrHWVersion = errors.New("dfu: wrong hardware version")

	// ErrSoftDevice is returned when an init packet's sd_req does not
	// name the lock's SoftDevice.
	ErrSoftDevice = errors.New("dfu: SoftDevice requirement not met")

	// ErrDowngrade is returned when an image's fw_version is below the
	// lock's (for a bootloader: not above it) and the policy does not
	// allow a downgrade.
	ErrDowngrade = errors.New("dfu: firmware version too low")

	// ErrResponse is returned when a Control Point notification is
	// malformed: too short, not a response, or with a payload of the wrong
	// length for its request.
	ErrResponse = errors.New("dfu: malformed response")

	// ErrRefused is returned (with a *[ResponseError]) when the target
	// answers a request with another result than success.
	ErrRefused = errors.New("dfu: target refused the request")
)
