// Package target is the reference Secure DFU bootloader: the target side
// of the DFU protocol as the nRF5 SDK's BLE bootloader behaves, for tests
// of the gateway's controller and as the specification the lock's
// firmware team checks its bootloader against (docs/dfu.md).
//
// A [Bootloader] holds what the SDK keeps in its settings page: the init
// packet received so far, its offset and CRC, the firmware offset and the
// CRC-32 over the whole image so far (carried across data objects), and
// the image being written. A [Conn] is one BLE connection: its ATT MTU,
// whether Control Point notifications are enabled, the PRN setting and
// counter. Requests written to the Control Point are answered with one
// notification; writes to the Packet characteristic are answered with a
// notification only when the PRN counter runs out. The bootloader checks
// the init packet at its Execute (signature under the fleet's DFU key,
// then [dfu.CheckInit]: hardware, SoftDevice, version; then the bank's
// size) and the image at the last data object's Execute (its SHA-256),
// then activates it and ends the connection, as the SDK resets into the
// new firmware.
//
// [Bootloader.Reset] is a reboot in the middle of a transfer: progress
// returns to what the settings page held at the last Execute, as the SDK
// saves it then. Activation has a commit point in the settings page (the
// bank is valid), then the copy over the running image at the next boot;
// [Options.Cut] cuts the power at each step ([CutPoints]), and a boot
// after the commit finishes the copy, so the running image is always a
// whole valid one. [Bootloader.Authorise] is what the lock's application
// writes at an authorised enter-dfu: the one init packet the bootloader
// executes; [Options.RequireAuthorisation] refuses every init packet
// without it (firmware/lock/device runs the two together).
//
// Not modelled yet: the flash itself (firmware/lock/flash) under the
// bank and the settings page, advertising (firmware/lock/device computes
// the address+1), and a SoftDevice image's new FWID (the SDK reads it
// from the SoftDevice's info structure; here activation of a SoftDevice
// changes only the bootloader version, for a combined image).
//
// It may import the standard library and firmware/ packages only.
package target
