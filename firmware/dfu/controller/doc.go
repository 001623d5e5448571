// Package controller is the DFU controller: it sends one image of a
// package ([dfu.Image]) to a lock's Secure DFU bootloader over any
// [Transport] (BlueZ in the gateway, an in-process link to the reference
// bootloader in tests), as pc-nrfutil 6.1.7 does: set the PRN, the init
// packet as a command object, then the firmware as data objects of the
// size the target selects, each streamed in ATT_MTU-3 writes, checked by
// offset and CRC-32 (over the whole image, carried across objects) and
// executed. It resumes from the offset and CRC the target reports: after a
// dropped link or a gateway restart, [Controller.Send] on a new connection
// continues where the target stands, re-sending at most the object in
// flight. It verifies nothing of the package itself: callers run
// [dfu.Package.Verify] first.
//
// It may import the standard library and firmware/ packages only.
package controller
