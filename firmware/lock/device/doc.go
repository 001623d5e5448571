// Package device is the whole reference lock as the nRF52832 runs it: the
// application (firmware/lock) and its Secure DFU bootloader
// (firmware/dfu/target), and which of the two runs. The application
// enters the bootloader only through an authorised enter-dfu command
// (docs/protocol.md §13.10): it writes the named init packet's hash to
// the bootloader's settings page and resets; the bootloader then executes
// only that init packet. The lock exposes no buttonless DFU service, so
// the bootloader cannot be reached otherwise. At each reboot of the
// bootloader (after an activation, a power cut, a reset) the lock boots
// its application again, with whichever image is valid, and reports that
// image's version in its results.
//
// A [Device] is data the BLE emulator can serve: in application mode the
// lock service at the lock's address, in bootloader mode the DFU service
// (0xFE59) at [Advertising]'s address, address+1 as the SDK's unbonded
// buttonless bootloader advertises.
//
// It may import the standard library and firmware/ packages only.
package device
