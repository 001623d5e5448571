// Package emulator is a stand-in for bluetoothd (BlueZ 5.66, as on Debian
// 12) for machines without Bluetooth. It owns the name org.bluez on a bus
// (normally a private one from bluez/internal/dbustest) and exports the
// object tree a BlueZ client sees, with BlueZ's exact D-Bus types, object
// paths and error names:
//
//   - / : org.freedesktop.DBus.ObjectManager (GetManagedObjects,
//     InterfacesAdded, InterfacesRemoved);
//   - /org/bluez : org.bluez.AgentManager1;
//   - /org/bluez/hci0 : org.bluez.Adapter1 (discovery, filters,
//     RemoveDevice);
//   - /org/bluez/hci0/dev_XX_XX_XX_XX_XX_XX : org.bluez.Device1, one per
//     hosted lock seen by the virtual radio while discovery runs;
//   - …/service000a, …/char000b, …/char000d, …/char0010 : the lock
//     service of docs/protocol.md §1 (GattService1, GattCharacteristic1)
//     while a device is connected.
//
// Every object also carries org.freedesktop.DBus.Properties (Get, GetAll,
// Set, PropertiesChanged) and org.freedesktop.DBus.Introspectable.
//
// The emulator hosts reference locks (firmware/lock). A connection runs the
// lock's Serve over a channel.FragmentTransport whose packets are the
// client's WriteValue calls on Inbox (gateway → lock) and PropertiesChanged
// signals of Outbox's Value (lock → gateway), as BlueZ reports
// notifications. One ticker goroutine drives the radio (advertisements,
// RSSI changes, devices going away), whatever the number of locks; each
// connection owns one goroutine running Serve. Close cancels and waits for
// every goroutine the emulator started.
//
// It may import the standard library, github.com/godbus/dbus/v5, firmware/
// packages and bluez/internal/dbustest (tests only). It never imports the
// BlueZ client (package bluez).
package emulator
