// Package dfulink is the DFU controller's transport over the BlueZ
// client: a firmware/dfu/controller.Transport on one LE connection to a
// lock's bootloader (its Secure DFU service 0xFE59, docs/dfu.md §4).
// Control Point requests are GATT writes with response (WriteValue
// "type": "request"), Packet writes are writes without response ("type":
// "command"), Control Point notifications come from the BlueZ client's
// subscription, and the ATT MTU is the connection's as BlueZ reports it.
// Every D-Bus call has a deadline.
//
// It may import bluez, firmware/ and the standard library (and godbus).
package dfulink
