// Package dfu reads and checks Nordic Secure DFU packages, the firmware
// updates of the fleet's nRF52832 locks, and holds the wire format of the
// Secure DFU protocol shared by the gateway (the controller,
// firmware/dfu/controller) and the lock's bootloader (the reference target,
// firmware/dfu/target).
//
// A package is the zip `nrfutil pkg generate` (pc-nrfutil 6.1.7) writes:
// manifest.json naming, per image, a .bin (the firmware) and a .dat (the
// init packet, protobuf dfu.Packet from dfupb/dfu-cc.proto). [Parse] takes
// such a zip apart without trusting it: bounded sizes (no zip bombs), plain
// file names only (no path traversal), exactly the files the manifest
// names, strict JSON, and init packets within the bootloader's nanopb
// limits. [Package.Verify] then checks each image against the fleet's DFU
// key and the lock it is meant for, before any radio work: the init
// packet's ECDSA P-256/SHA-256 signature (nrfutil's encoding: r‖s, each
// half little-endian), the firmware's SHA-256 against the init packet's
// hash (stored little-endian), sizes, hw_version, sd_req and fw_version
// (no downgrade unless the policy allows it). [CheckInit] is the version
// check the reference bootloader runs too, so both sides refuse alike.
//
// [Generate] builds packages as nrfutil does (same layout, same init packet
// bytes, same signing), for tests and for the test vectors in
// firmware/testdata/dfu (go run ./firmware/cmd/gendfu).
//
// docs/dfu.md describes packages, keys and the transfer for operators and
// the firmware team. It may import the standard library, other firmware/
// packages and google.golang.org/protobuf; never gateway packages.
package dfu
