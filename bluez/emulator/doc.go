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
//     hosted lock seen by the virtual radio while discovery runs, or
//     loaded "from storage" when the adapter is plugged in again;
//   - …/service000a, …/char000b (Inbox), …/char000d (Outbox),
//     …/char000d/desc000f (Outbox's Client Characteristic
//     Configuration), …/char0010 (Info): the lock service of
//     docs/protocol.md §1 (GattService1, GattCharacteristic1,
//     GattDescriptor1), exported by a device's first connection and kept
//     until the device object goes (see GATT caching below);
//   - for a whole lock (AddDevice) in DFU mode, at its address plus one:
//     …/service000a (the Secure DFU service 0xFE59), …/char000b (Control
//     Point: write, notify) with …/char000b/desc000d (its CCC), and
//     …/char000e (Packet: write without response), over the lock's
//     bootloader (firmware/dfu/target); docs/dfu.md §4.
//
// Every object also carries org.freedesktop.DBus.Properties (Get, GetAll,
// Set, PropertiesChanged) and org.freedesktop.DBus.Introspectable.
//
// Which BlueZ 5.66 source each behaviour follows:
//
//   - GATT objects (src/gatt-client.c): paths "service%04x" (start
//     handle), "char%04x" (declaration handle), "desc%04x"; the property
//     sets of service_properties, characteristic_properties and
//     descriptor_properties — no Handle (it came in 5.69), Notifying only
//     with notify/indicate, WriteAcquired only with
//     write-without-response, NotifyAcquired only with notify, MTU while
//     connected; exported in export_service's order and removed in
//     unregister_service's; a CCC descriptor refuses WriteValue with
//     NotPermitted "Write not permitted" (descriptor_write_value), and
//     its ReadValue stores the value read (desc_read_cb). AcquireWrite
//     and AcquireNotify exist but answer NotSupported: no file
//     descriptors are passed.
//   - GATT caching (main.conf [GATT] Cache = always, the default): the
//     GATT objects outlive the connection. A disconnect leaves them and
//     their cached Values (src/device.c attio_cleanup →
//     gatt_client_cleanup → gatt_cache_cleanup clears the database only
//     when caching is off for the device; src/gatt-client.c
//     btd_gatt_client_disconnected unregisters nothing); a later
//     connection reuses them with no InterfacesAdded (export_service
//     skips claimed services); they are removed, before the device, only
//     when the device object goes: RemoveDevice, the away timeout,
//     RemoveAdapter (device_free → btd_gatt_client_destroy). While the
//     device is disconnected: MTU does not exist (characteristic_mtu_exists,
//     no signal); ReadValue, WriteValue, AcquireWrite, AcquireNotify and
//     the descriptor's ReadValue and WriteValue fail first with
//     org.bluez.Error.Failed "Not connected"; notify sessions stay,
//     unregistered (clear_notify_id), with Notifying left as it was;
//     StartNotify opens a session the next connection registers (success),
//     or answers InProgress "In Progress" to a client whose session is
//     unregistered; StopNotify ends a session, and Notifying goes false
//     once no session is registered (update_notifying). A connection
//     registers every session again (btd_gatt_client_connected →
//     register_notify), so the lock's CCC reads 01 00 with no new
//     StartNotify.
//   - Connect (src/device.c dev_connect, att_connect_cb; src/error.c): a
//     connected device gets a plain return; a failed LE connection is
//     org.bluez.Error.Failed "le-connection-abort-by-local"; Connect makes
//     the device permanent (not temporary), so it stays out of range and
//     is stored. Connect returns once the link is up (Connected true),
//     before ServicesResolved, which follows Options.ResolveDelay later
//     (service discovery, or the GATT cache restore of a later
//     connection); GATT calls in between fail as on a disconnected
//     device. The ATT MTU is the smaller of the adapter's Options.MTU
//     (517, BlueZ's ExchangeMTU) and the lock's LockOptions.MTU (247).
//   - Pair (src/device.c new_authentication_return): the error names per
//     mgmt status; an SMP failure is AuthenticationFailed. A failed
//     pairing drops the link, makes the device temporary again (not
//     stored: a restart does not load it) and holds the next LE
//     connection for Options.PairFailureStall while discovery resumes.
//   - LEAdvertisingManager1 (src/advertising.c) on the adapter:
//     RegisterAdvertisement reads the object's properties from its owner
//     and refuses advertising data over 31 bytes (Failed "Failed to
//     register advertisement", the Linux 6.1 kernel's limit even on an
//     extended-advertising controller); UnregisterAdvertisement;
//     ActiveInstances. Nothing is put on the radio.
//   - Devices seen no more (src/device.c set_temporary_timer): temporary
//     devices leave AwayTimeout (TemporaryTimeout) after their last
//     advertisement; bonded ones and those a client connected stay.
//   - Adapter unplug and plug (src/adapter.c adapter_remove,
//     adapter_register, load_devices): see RemoveAdapter and AddAdapter.
//   - StartDiscovery twice from one client: InProgress (start_discovery,
//     btd_error_busy).
//
// The link model: Options.ConnectLatency, Options.ExchangeLatency (per
// GATT write and notification), Options.MaxConnections, one LE connection
// attempt at a time per adapter (InProgress otherwise). Faults: per device
// (InjectFaults: aborted connects, a drop after the Nth write, failed
// pairing, a StartNotify lost as under EATT, a slow ServicesResolved), seeded random ones (Options.DropRate, Options.AbortRate), a
// lock leaving range (LeaveRange, EnterRange, RemoveLock), adapter
// hot-unplug (RemoveAdapter, AddAdapter), a wedged adapter (Wedge, cured
// by a power cycle, counted by PowerCycles), and a bluetoothd restart
// (Restart).
//
// Not emulated: BR/EDR; main.conf's Cache = yes or no; GATT caches in
// storage (a device object made anew, after RemoveAdapter and AddAdapter
// or Restart, exports its GATT objects on its first connection, as
// BlueZ's btd_gatt_client_ready does, but no cache file is modelled);
// the Device1.Disconnected signal (5.70+); advertising on the radio and
// GattManager1 (the local GATT server); file descriptor passing
// (AcquireWrite, AcquireNotify). Restart and AddAdapter load the stored
// devices (bonded, or connected to and not made temporary again).
//
// Orders that differ from bluetoothd 5.66, which clients must not depend
// on: StartDiscovery signals Discovering=true before its reply, where
// bluetoothd replies when the controller's Start Discovery completes and
// signals Discovering afterwards, from its main loop's idle
// (start_discovery_complete; g_dbus_emit_property_changed is deferred);
// in both, Discovering reads true once the reply is sent. Restart brings
// org.bluez and the adapter at once, where bluetoothd takes the name
// first (main: connect_dbus before adapter_init) and the adapter's
// InterfacesAdded, then its stored devices' (adapter_register,
// load_devices), follow.
//
// What the real-BlueZ tier showed and the emulator follows is checked by
// bluez/internal/realbluez TestDifferential: step outcomes, property
// types and values, the order of Connect's reply and ServicesResolved,
// error names, the MTU, the link and storage after a failed pairing, the
// advertisement size limit. EATT and plain ATT looked the same through
// D-Bus there except for a StartNotify lost and a 30 s GATT cache restore
// under EATT (Faults.LostStartNotify, Faults.SlowResolve).
//
// The emulator hosts reference locks (firmware/lock). A connection runs the
// lock's Serve over a channel.FragmentTransport whose packets are the
// client's WriteValue calls on Inbox (gateway → lock) and PropertiesChanged
// signals of Outbox's Value (lock → gateway), as BlueZ reports
// notifications. One ticker goroutine drives the radio (advertisements,
// RSSI changes, devices going away), whatever the number of locks; each
// connection owns one goroutine running Serve. Close cancels and waits for
// every goroutine the emulator started. Advertise runs one radio round at
// once (tests and benchmarks with a long RadioInterval).
//
// Discovery filters are merged as bluetoothd merges them: an advertisement
// is reported (a device created, or its RSSI and ManufacturerData
// updated) when any discovery client's filter passes it (UUIDs, RSSI
// threshold, Transport); with DuplicateData in any client's filter,
// ManufacturerData is signalled at every advertisement even unchanged,
// otherwise only changes are.
//
// It may import the standard library, github.com/godbus/dbus/v5, firmware/
// packages and bluez/internal/dbustest (tests only). It never imports the
// BlueZ client (package bluez).
package emulator
