// Package locklink is the lock's side of one GATT connection, for a
// reference lock (firmware/lock) behind a BLE stack we drive over D-Bus:
// the BlueZ emulator (bluez/emulator) and the lock as a real BlueZ
// peripheral (bluez/peripheral). Both then run the lock through the same
// code path: GATT writes to Inbox are delivered into a Link (Deliver),
// the lock's packets leave it as Outbox notifications through a callback
// (Options.Notify), and Close ends the connection. Link implements
// firmware/channel.Link; Serve runs lock.Serve on it over a
// channel.FragmentTransport.
//
// A Link starts no goroutine. It may import the standard library and
// firmware/ packages.
package locklink
