package edhoc

import (
	"errors"
	"testing"
)

// TestRFC9529Invalid feeds every invalid message of RFC 9529 §4 to the
// side that would receive it and checks it is refused for the reason the
// section gives.
func TestRFC9529Invalid(t *testing.T) {
	v := traceValues(t, "4.  Invalid Traces", "5.  Security Considerations")

	message1 := []struct {
		sec  string
		want error
	}{
		{"4.1.1", ErrMalformed},  // message_1 wrapped in an array
		{"4.1.2", ErrMalformed},  // C_I 0x0e sent as bstr 41 0e
		{"4.1.3", ErrMalformed},  // single suite sent as array 81 02
		{"4.1.4", ErrMalformed},  // G_X as a text string
		{"4.2.1", ErrInvalidKey}, // 32-byte G_X for P-384 suite 24
		{"4.2.2", ErrInvalidKey}, // P-256 x >= p
		{"4.2.3", ErrInvalidKey}, // x not on P-256
		{"4.2.4", ErrInvalidKey}, // X25519 point of low order
		{"4.2.6", ErrInvalidKey}, // P-256 x without leading zero (31 bytes)
		{"4.3.1", ErrMalformed},  // METHOD as 19 00 03
		{"4.3.2", ErrMalformed},  // indefinite-length SUITES_I
	}
	for _, tc := range message1 {
		t.Run(tc.sec, func(t *testing.T) {
			m1 := tv(t, v, tc.sec+" Invalid message_1")
			_, re := newPair(t)
			err := re.ProcessMessage1(m1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			// The Responder can tell the Initiator why (RFC 9528 §6).
			pe, perr := ParseError(ErrorMessage(err))
			if perr != nil || pe.Code != ErrCodeUnspecified || pe.Info == "" {
				t.Fatalf("error message %+v, %v", pe, perr)
			}
			if _, err := re.Message2(); !errors.Is(err, ErrState) {
				t.Fatalf("Responder went on after a refused message_1: %v", err)
			}
		})
	}

	t.Run("4.1.5", func(t *testing.T) {
		in, _ := newPair(t)
		if _, err := in.Message1(); err != nil {
			t.Fatal(err)
		}
		_, err := in.ProcessMessage2(tv(t, v, "4.1.5 Invalid message_2"))
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})

	// The invalid PLAINTEXT_2 values are encrypted with a real session's
	// KEYSTREAM_2, so they reach the Initiator's parser through the same
	// path a Responder's message_2 does.
	for _, sec := range []string{"4.1.6", "4.1.7", "4.2.5"} {
		t.Run(sec, func(t *testing.T) {
			pt2 := tv(t, v, sec+" Invalid PLAINTEXT_2")
			in, re := newPair(t)
			m1, err := in.Message1()
			if err != nil {
				t.Fatal(err)
			}
			if err := re.ProcessMessage1(m1); err != nil {
				t.Fatal(err)
			}
			if _, err := re.Message2(); err != nil {
				t.Fatal(err)
			}
			_, err = in.ProcessMessage2(forgeMessage2(re, pt2))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

// forgeMessage2 builds a message_2 carrying pt2 under re's real G_Y and
// KEYSTREAM_2.
func forgeMessage2(re *Responder, pt2 []byte) []byte {
	gy := re.y.PublicKey().Bytes()
	ct := make([]byte, len(pt2))
	xorInto(ct, pt2, kdf(re.prk3e2m, 0, re.th2, len(pt2)))
	return appendBstr(nil, append(gy, ct...))
}
