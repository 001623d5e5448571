// Package systemd owns gatewayd's place under systemd: the unit file
// (gatewayd.service: Type=notify, watchdog, a dedicated user, hardening),
// the sysusers entry, and the notify protocol the daemon speaks to systemd
// (READY=1, STOPPING=1, WATCHDOG=1, STATUS=…) over $NOTIFY_SOCKET. Its
// tests run the real systemd-analyze on the unit.
//
// It may import only the standard library.
package systemd
