// Package peripheral runs a reference lock (firmware/lock) as a BLE
// peripheral of a real bluetoothd (BlueZ 5.66), over D-Bus: the lock the
// real-BlueZ tier (bluez/internal/realbluez, docs/real-bluez.md) talks to.
//
// On its adapter it registers, with the D-Bus API of BlueZ's docs:
//
//   - the lock's GATT service (docs/protocol.md §1: Inbox, Outbox, Info)
//     as a GATT application (ObjectManager, GattService1,
//     GattCharacteristic1) through GattManager1.RegisterApplication;
//   - its advertisement (LEAdvertisement1: the service UUID and the 11-byte
//     ManufacturerData payload of §1.1) through LEAdvertisingManager1 or,
//     when bluetoothd refuses it as too long (5.66 does: see mgmt.go and
//     Advertiser), through the kernel's management interface with the
//     UUID in the scan response. It is registered again every
//     Options.Readvertise (1 s by default) while no peer is connected,
//     because btvirt's virtual controllers send one advertising report per
//     advertising enable, and a scanner that misses it waits for the
//     kernel's next discovery restart (about 10 s);
//   - the default Agent1 with capability KeyboardOnly: bluetoothd asks the
//     default agent for the lock side of a pairing, and the agent answers
//     RequestPasskey with the one-time passkey of the lock's bond window
//     for that peer (lock.BondPasskey), or Rejected. SMP then checks what
//     the gateway entered.
//
// Each connection's GATT writes are delivered to the lock through a
// bluez/internal/locklink.Link (the code path the emulator shares), and
// the lock's packets leave as PropertiesChanged of Outbox's Value, which
// bluetoothd sends as notifications. A connection ends when the peer's
// Device1 Connected turns false.
//
// SMP tells the responder's application nothing about a failed pairing,
// so the lock learns of it from bluetoothd's objects: a pairing the agent
// gave a passkey for succeeded when the peer's Device1 Paired turns true
// (then lock.Pair records the bond); it failed when the peer disconnects
// first, or asks for a passkey again (then lock.PairingFailed counts it,
// and three close the window, as on the nRF52832).
//
// When bluetoothd restarts (a new owner of org.bluez) everything is
// registered again. Goroutines: one event loop, and one per connection
// running the lock; Close cancels and waits for all. Every D-Bus call has
// a deadline (Options.CallTimeout). Passkeys are never logged.
//
// It may import the standard library (syscall for the management socket),
// github.com/godbus/dbus/v5, firmware/ packages, package bluez (the signal
// dispatcher and error mapping) and bluez/internal/locklink.
package peripheral
