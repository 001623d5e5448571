package dfu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// Limits of the nRF5 SDK bootloader's nanopb decoder (dfupb/dfu-cc.options).
const (
	maxHash           = 32
	maxSignature      = 64
	maxSDReq          = 4
	maxBootValidation = 3
	maxBootValBytes   = 64
)

// InitPacket is a parsed init packet (the .dat file).
type InitPacket struct {
	// Raw is the whole init packet, as sent in the command object.
	Raw []byte
	// Command is the InitCommand's bytes as they stand in Raw: what the
	// signature covers (the bootloader hashes these bytes, not a
	// re-encoding).
	Command []byte
	// Init is the decoded InitCommand.
	Init *dfupb.InitCommand
	// Signed says whether the packet is a signed_command. If so,
	// SignatureType and Signature (64 bytes, r‖s each little-endian for
	// ECDSA) are its signature.
	Signed        bool
	SignatureType dfupb.SignatureType
	Signature     []byte
}

// ParseInitPacket decodes an init packet as the bootloader does, and more
// strictly: at most [MaxInitPacket] bytes; exactly one of command and
// signed_command; an INIT command holding exactly one init field, the
// last field of the command (the bootloader's signed bytes run to the
// command's end); no unknown fields; the nanopb size limits.
func ParseInitPacket(raw []byte) (*InitPacket, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrInitPacket)
	}
	if len(raw) > MaxInitPacket {
		return nil, fmt.Errorf("%w: %d bytes, the bootloader takes at most %d", ErrInitPacket, len(raw), MaxInitPacket)
	}
	var pkt dfupb.Packet
	if err := proto.Unmarshal(raw, &pkt); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInitPacket, err)
	}
	if err := noUnknown(&pkt); err != nil {
		return nil, err
	}
	// Walk the wire form for what the decoded messages hide: repeated
	// singular fields (protobuf merges them) and the init command's bytes.
	top, _, err := fields(raw)
	if err != nil {
		return nil, err
	}
	p := &InitPacket{Raw: raw}
	var cmdRaw []byte
	var cmd *dfupb.Command
	switch {
	case len(top[1]) > 0 && len(top[2]) > 0:
		return nil, fmt.Errorf("%w: both command and signed_command", ErrInitPacket)
	case len(top[2]) == 1:
		sc, _, err := fields(top[2][0])
		if err != nil {
			return nil, err
		}
		if len(sc[1]) != 1 || len(sc[2]) != 1 || len(sc[3]) != 1 {
			return nil, fmt.Errorf("%w: signed_command needs command, signature_type and signature once each", ErrInitPacket)
		}
		cmdRaw, cmd = sc[1][0], pkt.GetSignedCommand().GetCommand()
		p.Signed = true
		p.SignatureType = pkt.GetSignedCommand().GetSignatureType()
		p.Signature = pkt.GetSignedCommand().GetSignature()
		if len(p.Signature) > maxSignature {
			return nil, fmt.Errorf("%w: signature of %d bytes", ErrInitPacket, len(p.Signature))
		}
	case len(top[1]) == 1:
		cmdRaw, cmd = top[1][0], pkt.GetCommand()
	default:
		return nil, fmt.Errorf("%w: no command, or a command repeated", ErrInitPacket)
	}
	if cmd == nil || cmd.OpCode == nil || cmd.GetOpCode() != dfupb.OpCode_INIT {
		return nil, fmt.Errorf("%w: command is not INIT", ErrInitPacket)
	}
	cf, lastField, err := fields(cmdRaw)
	if err != nil {
		return nil, err
	}
	if len(cf[1]) > 1 || len(cf[2]) != 1 || len(cf[3]) != 0 {
		return nil, fmt.Errorf("%w: the INIT command needs exactly one init and no reset", ErrInitPacket)
	}
	p.Command = cf[2][0]
	if lastField != 2 {
		return nil, fmt.Errorf("%w: init is not the command's last field", ErrInitPacket)
	}
	p.Init = cmd.GetInit()
	if err := checkLimits(p.Init); err != nil {
		return nil, err
	}
	return p, nil
}

// fields splits one message's wire bytes into its fields by number (the
// value of a length-delimited field, nil for others), says which field
// came last, and checks the whole message is well-formed.
func fields(b []byte) (map[protowire.Number][][]byte, protowire.Number, error) {
	out := map[protowire.Number][][]byte{}
	var last protowire.Number
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("%w: %v", ErrInitPacket, protowire.ParseError(n))
		}
		b = b[n:]
		last = num
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, 0, fmt.Errorf("%w: %v", ErrInitPacket, protowire.ParseError(m))
			}
			out[num] = append(out[num], v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, 0, fmt.Errorf("%w: %v", ErrInitPacket, protowire.ParseError(m))
		}
		out[num] = append(out[num], nil)
		b = b[m:]
	}
	return out, last, nil
}

func checkLimits(init *dfupb.InitCommand) error {
	switch {
	case init == nil:
		return fmt.Errorf("%w: no init command", ErrInitPacket)
	case len(init.GetHash().GetHash()) > maxHash:
		return fmt.Errorf("%w: hash of %d bytes", ErrInitPacket, len(init.GetHash().GetHash()))
	case len(init.GetSdReq()) > maxSDReq:
		return fmt.Errorf("%w: %d sd_req entries, at most %d", ErrInitPacket, len(init.GetSdReq()), maxSDReq)
	case len(init.GetBootValidation()) > maxBootValidation:
		return fmt.Errorf("%w: %d boot_validation entries, at most %d", ErrInitPacket, len(init.GetBootValidation()), maxBootValidation)
	}
	for _, bv := range init.GetBootValidation() {
		if len(bv.GetBytes()) > maxBootValBytes {
			return fmt.Errorf("%w: boot_validation of %d bytes", ErrInitPacket, len(bv.GetBytes()))
		}
	}
	return nil
}

// noUnknown refuses fields dfu-cc.proto does not define, anywhere: the
// bootloader would skip them, but nothing we sign or check has them.
func noUnknown(pkt *dfupb.Packet) error {
	msgs := []proto.Message{pkt, pkt.GetCommand(), pkt.GetSignedCommand(), pkt.GetSignedCommand().GetCommand()}
	for _, c := range []*dfupb.Command{pkt.GetCommand(), pkt.GetSignedCommand().GetCommand()} {
		if c.GetInit() != nil {
			msgs = append(msgs, c.GetInit(), c.GetInit().GetHash())
			for _, bv := range c.GetInit().GetBootValidation() {
				msgs = append(msgs, bv)
			}
		}
	}
	for _, m := range msgs {
		if m == nil || !m.ProtoReflect().IsValid() {
			continue
		}
		if len(m.ProtoReflect().GetUnknown()) > 0 {
			return fmt.Errorf("%w: unknown fields in %s", ErrInitPacket, m.ProtoReflect().Descriptor().Name())
		}
	}
	return nil
}

// VerifySignature checks the init packet's signature under key: ECDSA
// P-256 over SHA-256 of [InitPacket.Command], encoded as nrfutil writes it
// (r‖s, 32 bytes each, each little-endian).
func VerifySignature(p *InitPacket, key *ecdsa.PublicKey) error {
	if !p.Signed || len(p.Signature) == 0 {
		return ErrUnsigned
	}
	if p.SignatureType != dfupb.SignatureType_ECDSA_P256_SHA256 {
		return fmt.Errorf("%w: %s", ErrSignatureType, p.SignatureType)
	}
	if key == nil || key.Curve != elliptic.P256() {
		return fmt.Errorf("%w: no P-256 DFU key", ErrSignature)
	}
	if len(p.Signature) != 64 {
		return fmt.Errorf("%w: %d signature bytes, want 64", ErrSignature, len(p.Signature))
	}
	r := new(big.Int).SetBytes(reversed(p.Signature[:32]))
	s := new(big.Int).SetBytes(reversed(p.Signature[32:]))
	digest := sha256.Sum256(p.Command)
	if !ecdsa.Verify(key, digest[:], r, s) {
		return ErrSignature
	}
	return nil
}

func reversed(b []byte) []byte {
	out := slices.Clone(b)
	slices.Reverse(out)
	return out
}

// FirmwareHash is the hash an init packet carries for firmware: its
// SHA-256, byte-reversed (nrfutil stores it little-endian).
func FirmwareHash(firmware []byte) []byte {
	h := sha256.Sum256(firmware)
	return reversed(h[:])
}

// NRFPublicKey encodes a P-256 public key as the bootloader's
// dfu_public_key.c holds it (`nrfutil keys display --key pk --format
// code`): x then y, 32 bytes each, each little-endian.
func NRFPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	b, err := pub.Bytes() // 04 ‖ x ‖ y, big-endian
	if err != nil {
		return nil, fmt.Errorf("dfu: public key: %w", err)
	}
	return append(reversed(b[1:33]), reversed(b[33:65])...), nil
}

// ParseNRFPublicKey decodes the bootloader's 64-byte key encoding.
func ParseNRFPublicKey(pk []byte) (*ecdsa.PublicKey, error) {
	if len(pk) != 64 {
		return nil, fmt.Errorf("dfu: public key of %d bytes, want 64", len(pk))
	}
	sec1 := append([]byte{4}, reversed(pk[:32])...)
	sec1 = append(sec1, reversed(pk[32:])...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), sec1)
	if err != nil {
		return nil, fmt.Errorf("dfu: public key: %w", err)
	}
	return pub, nil
}
