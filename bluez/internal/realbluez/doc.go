// Package realbluez is the real-BlueZ tier (docs/real-bluez.md): the bluez
// client and the reference lock on Debian's bluetoothd 5.66 and the Linux
// kernel's SMP, over two virtual LE controllers (btvirt), in a qemu (TCG)
// guest built from Debian packages by scripts/qemu.
//
// The scenarios (Scenarios) are written once against an Env and run in two
// places: in the guest by cmd/bletier, with the gateway (package bluez and
// firmware/lockclient) on hci0 and the lock as a bluez/peripheral on hci1;
// and on the host against the BlueZ emulator (RunEmulator). Each step
// yields one Result (a JSON line). TestRealBlueZ builds the image, boots
// it once with EATT and once with [GATT] Channels = 1, and checks each
// scenario's steps and, from a btsnoop capture parsed here (btmon 5.66 can
// crash decoding it), the SMP method and link encryption. TestDifferential
// compares the emulator's results and D-Bus property types with real
// BlueZ's, with the known differences listed in a table.
//
// It lives under bluez/ because it needs bluez/internal/dbustest (the
// emulator's private bus) and bluez/internal/locklink (through
// bluez/peripheral). It may import the standard library, godbus, package
// bluez and its sub-packages, and firmware/.
package realbluez
