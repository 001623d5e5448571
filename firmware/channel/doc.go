// Package channel joins the pieces of the lock protocol into a secure
// channel between an Initiator (gateway or phone) and a Responder (lock):
// the EDHOC handshake (firmware/edhoc) authenticated with fleet credentials
// (firmware/cred), then protected frames (firmware/frame), over any
// transport of whole messages — for BLE GATT, the fragmentation layer
// (firmware/fragment) through [FragmentTransport].
//
// It owns the message layer of docs/protocol.md §3: the type byte that
// starts every message, the order of the handshake messages on the wire,
// what each side sends when the handshake fails, and the retry by value when
// the lock does not know the gateway's credential.
//
// It may import the standard library and the other firmware/ packages only:
// it is shared by the gateway (Dial) and the reference lock (Accept).
package channel
