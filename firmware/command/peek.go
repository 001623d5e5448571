package command

import "fmt"

// Peek decodes a signed command as [Verifier.Verify] does at its steps 1,
// 2 and 6 — the size limit before any decoding, the strict COSE_Sign1
// envelope, the strict body — and returns the body WITHOUT checking the
// signer, the signature, the role, the lock or the time. Errors wrap
// ErrMalformed.
//
// It is for routing only: it tells a gateway which lock and operation a
// signed command claims, so that it can build the [Verifier] (LockID) and
// pass the op (wantOp) that Verify needs. Never trust its result before
// Verify accepted the same bytes: anybody can write any body.
func Peek(signed []byte) (Body, error) {
	if len(signed) > MaxSignedSize {
		return Body{}, fmt.Errorf("%w: signed command of %d bytes, limit %d", ErrMalformed, len(signed), MaxSignedSize)
	}
	env, err := parseSign1(signed)
	if err != nil {
		return Body{}, err
	}
	return parseBody(env.Payload)
}
