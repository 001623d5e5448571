// Package dfupb is the Go code protoc generates from dfu-cc.proto, the
// schema of Nordic Secure DFU's init packet (protobuf package dfu, proto2)
// as pc-nrfutil 6.1.7 writes it and the nRF5 SDK bootloader reads it.
// Nothing in it is written by hand: gen_test.go regenerates it and fails
// when the committed file drifts. Use firmware/dfu to read packages; this
// package only carries the messages.
//
// It may import the standard library and google.golang.org/protobuf only.
package dfupb
