// Package bluez is gatewayd's BlueZ D-Bus client: it reaches the radio only
// through bluetoothd's (BlueZ 5.66) D-Bus API on the system bus. It owns the
// signal plumbing (Dispatcher), the mapping of org.bluez.Error.* replies to
// Go errors (Error, MapError and the Err* sentinels), the adapter client
// (Open, Adapter) that discovers locks and parses their advertisements
// (docs/protocol.md §1.1) and recovers when bluetoothd restarts, the device
// client (Connect, Device), a firmware/channel.Link over the lock service's
// Inbox and Outbox, and pairing: our own Agent1 (NewAgent, KeyboardOnly)
// that gives a one-time passkey to exactly the device it was registered
// for, Pair (which cancels pairing at its deadline) and RemoveBond.
//
// # Recovery
//
// Nothing here ever restarts bluetoothd or gatewayd. The Dispatcher
// watches org.bluez's owner with one match rule: when bluetoothd leaves
// the bus, every Device of it fails its reads as retryable (ErrBusGone)
// and calls in flight fail with the bus's NoReply (also ErrBusGone). The
// Adapter forgets its devices, and when a new bluetoothd appears, or the
// adapter itself is removed and added again, it powers the adapter on,
// sets the discovery filter and starts discovery again; an Agent given a
// Dispatcher registers itself again. A health check every
// Options.SweepEvery powers the adapter on if something turned it off,
// restarts stopped discovery, and power-cycles a wedged adapter
// (discovery stuck: stopped, as bluetoothd reports it when asked, while
// StartDiscovery answers InProgress; or
// Options.WedgeConnectFailures connects in a row failing with a link
// error), at most once per Options.MinPowerCycleInterval. A Device
// ignores signals received before its own Connect reply (godbus's
// receive sequence), so a previous connection's late Connected=false
// never ends a new one. Collector exports the counters to Prometheus
// (gatewayd_bluez_*).
//
// Goroutines: one per Dispatcher and one per Adapter, whatever the number
// of subscriptions or devices; an Agent with a Dispatcher owns one (to
// register again), stopped and waited for by Close; a Device starts none
// (godbus runs the agent's method handlers). Tests run against a private
// bus (internal/dbustest) with the BlueZ emulator (bluez/emulator) hosting
// reference locks; internal/fakebluez remains only for unit tests that
// need what the emulator never produces on purpose: mistyped or malformed
// advertisements, thousands of devices, notifications injected at will.
//
// Imports: the standard library, github.com/godbus/dbus/v5,
// github.com/prometheus/client_golang (Collector) and the project's
// firmware/ packages and internal/backoff only (tests also use bluez/emulator).
//
// # Library choice
//
// Calls and signal plumbing are our own, written directly on
// github.com/godbus/dbus/v5:
//
//   - one signal dispatcher per connection (Dispatcher): one goroutine reads
//     the connection's signal channel and fans signals out to subscriptions;
//     there is no goroutine per subscription or per device;
//   - every subscription adds its own match rule (with a path or
//     path_namespace filter) and removes exactly that rule when closed, so
//     subscribe/unsubscribe cycles leave the bus's rule count flat;
//   - every D-Bus call carries a context with a deadline (CallWithContext).
//
// github.com/muka/go-bluetooth is not used. Measured on these machines
// (docs/bluez.md, "Why not go-bluetooth"): its Close and GetPropertiesSignal never
// remove their match rules (50 rounds left 50 rules; 20 signals parked about
// 1,000 goroutines); WatchProperties leaks the same way and
// UnwatchProperties blocks unless the caller keeps reading; its
// Device1.AdvertisingData is mistyped, so device listing fails whenever a
// cached device carries that property; no call takes a context (Connect can
// wait 40 s); api.Discover changes the adapter's Pairable and Discoverable;
// and it logs through a global logger. The project is also archived
// upstream.
//
// # Advertisements
//
// DialBus (DialSystemBus) connects to the bus through a reader that takes
// advertisement-only Device1 PropertiesChanged signals (RSSI,
// ManufacturerData) of an open Adapter's devices out of the stream and
// decodes them without godbus's reflection (advwire.go); every other
// message reaches godbus unchanged. The Adapter takes them in that
// reading goroutine (no channel, no wake-up of its own goroutine) and
// does not parse a payload it has seen before. On a connection made
// otherwise the Adapter receives them through the Dispatcher as before.
// A change of RSSI alone is reported (Updated) at most once per
// Options.UpdateEvery per lock. The discovery filter (service UUID, LE,
// optional Options.MinRSSI, DuplicateData) keeps everything else inside
// bluetoothd. See docs/bluez.md.
//
// Logging goes only to child loggers of the *slog.Logger passed in options
// (nil discards); keys and passkeys are never logged.
package bluez
