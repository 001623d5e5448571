// Package lock is the reference lock: what the nRF52832 firmware must do,
// written in Go. It serves connections over firmware/channel, runs the
// commands of firmware/command under end-to-end operator authorisation,
// keeps users, counters, clock, bonds and its audit log in flash
// (firmware/lock/flash, firmware/lock/audit), opens bond windows with
// one-time passkeys, and backs off failed peers. An authorised enter-dfu
// hands the named init packet's hash to its Bootloader and resets into it
// once the result is sent (firmware/lock/device models the two together).
//
// The emulator, the demo and the end-to-end tests run against it. It may
// import the standard library and firmware/ packages only.
package lock
