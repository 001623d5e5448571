package command

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Strict decoding of requests. The valid base is {1: 3, 2: 7} (status,
// request 7) = a2 01 03 02 07.

func wantMalformedRequest(t *testing.T, h string) {
	t.Helper()
	_, err := ParseRequest(unhex(t, h))
	wantErr(t, err, ErrMalformed)
}

func TestStrictRequestBaseParses(t *testing.T) {
	r, err := ParseRequest(unhex(t, "a2 01 03 02 07"))
	if err != nil || r.Op != OpStatus || r.RequestID != 7 {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestStrictRequestIndefiniteMap(t *testing.T) {
	wantMalformedRequest(t, "bf 01 03 02 07 ff")
}

func TestStrictRequestIndefiniteText(t *testing.T) {
	// remove-user {1: "bob"} with the user ID as an indefinite text string.
	wantMalformedRequest(t, "a3 01 05 02 01 03 a1 01 7f 63 626f62 ff")
}

func TestStrictRequestIndefiniteArgs(t *testing.T) {
	wantMalformedRequest(t, "a3 01 05 02 01 03 bf 01 63 626f62 ff")
}

func TestStrictRequestDuplicateKey(t *testing.T) {
	wantMalformedRequest(t, "a3 01 03 02 07 02 07")
}

func TestStrictRequestDuplicateArgKey(t *testing.T) {
	wantMalformedRequest(t, "a3 01 05 02 01 03 a2 01 63 626f62 01 63 626f62")
}

func TestStrictRequestUnknownKey(t *testing.T) {
	wantMalformedRequest(t, "a3 01 03 02 07 05 00")
}

func TestStrictRequestUnknownArgKey(t *testing.T) {
	// remove-user {1: "bob", 2: 0}
	wantMalformedRequest(t, "a3 01 05 02 01 03 a2 01 63 626f62 02 00")
}

func TestStrictRequestArgsForOpWithoutArgs(t *testing.T) {
	// unlock {1: 0}
	wantMalformedRequest(t, "a3 01 02 02 01 03 a1 01 00")
}

func TestStrictRequestNegativeKey(t *testing.T) {
	wantMalformedRequest(t, "a3 01 03 02 07 20 00")
}

func TestStrictRequestTextKey(t *testing.T) {
	wantMalformedRequest(t, "a2 61 31 03 02 07")
}

func TestStrictRequestMissingRequestID(t *testing.T) {
	wantMalformedRequest(t, "a1 01 03")
}

func TestStrictRequestMissingOp(t *testing.T) {
	wantMalformedRequest(t, "a1 02 07")
}

func TestStrictRequestMissingRequiredArg(t *testing.T) {
	// read-audit {1: 0} without max.
	wantMalformedRequest(t, "a3 01 09 02 01 03 a1 01 00")
}

func TestStrictRequestMissingArgs(t *testing.T) {
	// remove-user without args: its user_id is required.
	wantMalformedRequest(t, "a2 01 05 02 01")
}

func TestStrictRequestTrailingBytes(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 07 00")
}

func TestStrictRequestTwoItems(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 07 a2 01 03 02 07")
}

func TestStrictRequestWrongTypeOp(t *testing.T) {
	wantMalformedRequest(t, "a2 01 61 33 02 07") // op "3"
}

func TestStrictRequestWrongTypeRequestID(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 41 07") // request_id h'07'
}

func TestStrictRequestWrongTypeArgs(t *testing.T) {
	wantMalformedRequest(t, "a3 01 05 02 01 03 81 63 626f62") // args ["bob"]
}

func TestStrictRequestWrongTypeSigned(t *testing.T) {
	wantMalformedRequest(t, "a3 01 02 02 01 04 61 00") // signed "\x00"
}

func TestStrictRequestWrongTypeUserIDBytes(t *testing.T) {
	wantMalformedRequest(t, "a3 01 05 02 01 03 a1 01 43 626f62") // user_id h'626f62'
}

func TestStrictRequestWrongTypePublicKeyArray(t *testing.T) {
	// add-user whose public key is an array of 32 small integers, which a
	// lax decoder would take for a []byte.
	a := sampleArgs(OpAddUser)
	m, err := argSchemas[OpAddUser].encode(&a)
	if err != nil {
		t.Fatal(err)
	}
	ints := make([]uint8, 32)
	for i := range ints {
		ints[i] = a.PublicKey[i] & 0x0f
	}
	arr := make([]any, 32)
	for i, v := range ints {
		arr[i] = v
	}
	m[2] = arr
	args, _ := encMode.Marshal(m)
	req, _ := encMode.Marshal(map[uint64]any{1: 4, 2: 1, 3: cbor.RawMessage(args)})
	_, err = ParseRequest(req)
	wantErr(t, err, ErrMalformed)
}

func TestStrictRequestWrongTypeFloat(t *testing.T) {
	wantMalformedRequest(t, "a2 01 f9 4200 02 07") // op 3.0 as a half float
}

func TestStrictRequestNonShortestInt(t *testing.T) {
	wantMalformedRequest(t, "a2 01 18 03 02 07")
}

func TestStrictRequestNonShortestRequestID(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 1a 00000007")
}

func TestStrictRequestNonShortestMapHead(t *testing.T) {
	wantMalformedRequest(t, "b8 02 01 03 02 07")
}

func TestStrictRequestNonShortestTextLength(t *testing.T) {
	wantMalformedRequest(t, "a3 01 05 02 01 03 a1 01 78 03 626f62")
}

func TestStrictRequestUnsortedKeys(t *testing.T) {
	wantMalformedRequest(t, "a2 02 07 01 03")
}

func TestStrictRequestEmptyArgsPresent(t *testing.T) {
	// Empty args must be left out, not sent as {}.
	wantMalformedRequest(t, "a3 01 03 02 07 03 a0")
}

func TestStrictRequestTagged(t *testing.T) {
	wantMalformedRequest(t, "d8 18 a2 01 03 02 07")
}

func TestStrictRequestTagInside(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 c1 07")
}

func TestStrictRequestArgsAndSigned(t *testing.T) {
	wantMalformedRequest(t, "a4 01 05 02 01 03 a1 01 63 626f62 04 41 84")
}

func TestStrictRequestEmptySigned(t *testing.T) {
	wantMalformedRequest(t, "a3 01 02 02 01 04 40")
}

func TestStrictRequestRequestIDTooLarge(t *testing.T) {
	wantMalformedRequest(t, "a2 01 03 02 1b 0000000100000000")
}

func TestStrictRequestArgOutOfRange(t *testing.T) {
	for _, h := range []string{
		"a3 01 07 02 01 03 a1 01 18 3d",               // window 61
		"a3 01 07 02 01 03 a1 01 00",                  // window 0
		"a3 01 09 02 01 03 a2 01 00 02 00",            // max 0
		"a3 01 09 02 01 03 a2 01 00 02 11",            // max 17
		"a3 01 0a 02 01 03 a1 01 00",                  // time 0
		"a3 01 0a 02 01 03 a1 01 1b 0000000100000000", // time 2^32
		"a3 01 05 02 01 03 a1 01 60",                  // user_id ""
		"a3 01 05 02 01 03 a1 01 62 c328",             // user_id invalid UTF-8
	} {
		t.Run(h, func(t *testing.T) { wantMalformedRequest(t, h) })
	}
}

func TestStrictRequestAddUserBadRole(t *testing.T) {
	a := sampleArgs(OpAddUser)
	a.Role = 2
	if _, err := MarshalRequest(&Request{Op: OpAddUser, Args: a}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("role 2 encoded: %v", err)
	}
	a.Role = 1
	m, _ := argSchemas[OpAddUser].encode(&a)
	m[3] = uint64(2)
	args, _ := encMode.Marshal(m)
	req, _ := encMode.Marshal(map[uint64]any{1: 4, 2: 1, 3: cbor.RawMessage(args)})
	_, err := ParseRequest(req)
	wantErr(t, err, ErrMalformed)
}

func TestStrictRequestAddUserWindowInverted(t *testing.T) {
	a := sampleArgs(OpAddUser)
	a.NotAfter = a.NotBefore
	if _, err := MarshalRequest(&Request{Op: OpAddUser, Args: a}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty validity window encoded: %v", err)
	}
}

func TestStrictRequestOversized(t *testing.T) {
	// A well-formed request just over the limit: a signed command padded
	// to exactly MaxRequestSize+1 bytes in total.
	b := make([]byte, 0, MaxRequestSize+1)
	b = append(b, 0xa3, 0x01, 0x02, 0x02, 0x01, 0x04, 0x59)
	n := MaxRequestSize + 1 - len(b) - 2
	b = append(b, byte(n>>8), byte(n))
	b = append(b, make([]byte, n)...)
	if len(b) != MaxRequestSize+1 {
		t.Fatalf("built %d bytes", len(b))
	}
	_, err := ParseRequest(b)
	wantErr(t, err, ErrMalformed)
}

func TestStrictRequestSignedOversized(t *testing.T) {
	b := []byte{0xa3, 0x01, 0x02, 0x02, 0x01, 0x04, 0x59, 0x04, 0x01} // bstr of 1025
	b = append(b, make([]byte, MaxSignedSize+1)...)
	_, err := ParseRequest(b)
	wantErr(t, err, ErrMalformed)
}

func TestStrictRequestUnknownOpEchoesID(t *testing.T) {
	r, err := ParseRequest(unhex(t, "a2 01 0d 02 19 1234"))
	wantErr(t, err, ErrUnknownOp)
	if r.RequestID != 0x1234 || r.Op != 13 {
		t.Fatalf("partial request %+v", r)
	}
	r, err = ParseRequest(unhex(t, "a2 01 1a 00010000 02 05"))
	wantErr(t, err, ErrUnknownOp)
	if r.RequestID != 5 {
		t.Fatalf("partial request %+v", r)
	}
}

func TestStrictRequestMalformedEchoesID(t *testing.T) {
	// Unknown key 9, but request_id 42 is readable.
	r, err := ParseRequest(unhex(t, "a3 01 03 02 18 2a 09 00"))
	wantErr(t, err, ErrMalformed)
	if r.RequestID != 42 {
		t.Fatalf("partial request %+v", r)
	}
}

// Strict decoding of results. The base is a valid lock result.

func resultMap(t *testing.T) map[uint64]any {
	t.Helper()
	r := sampleResult(t, OpLock)
	m, err := resultSchema.encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantMalformedResult(t *testing.T, op Op, b []byte) {
	t.Helper()
	_, err := ParseResult(op, b)
	wantErr(t, err, ErrMalformed)
}

func TestStrictResultBaseParses(t *testing.T) {
	b, _ := encMode.Marshal(resultMap(t))
	if _, err := ParseResult(OpLock, b); err != nil {
		t.Fatal(err)
	}
}

func TestStrictResultUnknownKey(t *testing.T) {
	m := resultMap(t)
	m[10] = uint64(0)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultMissingKey(t *testing.T) {
	m := resultMap(t)
	delete(m, 5)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultUndefinedStatus(t *testing.T) {
	m := resultMap(t)
	m[2] = uint64(19)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultUndefinedLockState(t *testing.T) {
	m := resultMap(t)
	m[3] = uint64(3)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultBatteryOver100(t *testing.T) {
	m := resultMap(t)
	m[4] = uint64(101)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultDetailTooLong(t *testing.T) {
	m := resultMap(t)
	m[8] = string(bytes.Repeat([]byte{'x'}, MaxDetailLen+1))
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultEmptyDetailPresent(t *testing.T) {
	m := resultMap(t)
	m[8] = ""
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultShortCommandID(t *testing.T) {
	m := resultMap(t)
	m[7] = make([]byte, 15)
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpLock, b)
}

func TestStrictResultTrailingBytes(t *testing.T) {
	b, _ := encMode.Marshal(resultMap(t))
	wantMalformedResult(t, OpLock, append(b, 0x00))
}

func TestStrictResultNonShortestInt(t *testing.T) {
	b, _ := encMode.Marshal(resultMap(t))
	// request_id 77 = 18 4d; re-encode it as 19 004d.
	i := bytes.Index(b, []byte{0x01, 0x18, 0x4d})
	if i < 0 {
		t.Fatalf("request_id not found in %x", b)
	}
	nb := append(append(append([]byte{}, b[:i+1]...), 0x19, 0x00, 0x4d), b[i+3:]...)
	wantMalformedResult(t, OpLock, nb)
}

func TestStrictResultOversized(t *testing.T) {
	m := resultMap(t)
	delete(m, 7)
	m[2] = uint64(StatusOK)
	big := make([]any, 64)
	for i := range big {
		big[i] = bytes.Repeat([]byte{1}, 40)
	}
	m[9], _ = encMode.Marshal(big)
	b, _ := encMode.Marshal(m)
	if len(b) <= MaxResultSize {
		t.Fatalf("built only %d bytes", len(b))
	}
	wantMalformedResult(t, OpReadAudit, b)
}

func TestStrictResultNonCanonicalAuditData(t *testing.T) {
	m := resultMap(t)
	m[9] = cbor.RawMessage{0x81, 0x18, 0x01} // [1] with a non-shortest 1
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpReadAudit, b)
}

func TestStrictResultNonCanonicalStatusData(t *testing.T) {
	m := resultMap(t)
	// {1: 0, 2: 0, 3: 0, 4: 0} with the keys out of order.
	m[9] = cbor.RawMessage(unhex(t, "a4 02 00 01 00 03 00 04 00"))
	b, _ := encMode.Marshal(m)
	wantMalformedResult(t, OpStatus, b)
}

func TestStrictResultUsersNotSorted(t *testing.T) {
	u := []UserEntry{{Slot: 2, UserID: "a", Role: 1, NotAfter: t0}, {Slot: 1, UserID: "b", Role: 1, NotAfter: t0}}
	if _, err := EncodeUsers(u); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unsorted users encoded: %v", err)
	}
}

func TestStrictResultBadPeerAddress(t *testing.T) {
	for _, a := range []string{"dc:a6:32:01:02:03", "DC-A6-32-01-02-03", "DC:A6:32:01:02", "DC:A6:32:01:02:0G"} {
		if _, err := EncodeBondWindow(BondWindow{Passkey: 1, WindowSeconds: 30, Peer: a}); !errors.Is(err, ErrMalformed) {
			t.Errorf("address %q encoded: %v", a, err)
		}
	}
}

func TestStrictResultDuplicateOfDuplicate(t *testing.T) {
	if _, err := EncodeDuplicate(StatusDuplicateCommand); !errors.Is(err, ErrMalformed) {
		t.Fatalf("duplicate of duplicate: %v", err)
	}
}

// Strict decoding of signed commands (steps 1, 2 and 6 of Verify). Each
// starts from a real signed command.

func signedParts(t *testing.T) (e *env, raw []byte, env1 *sign1) {
	t.Helper()
	e = newEnv(t)
	raw = e.sign(t, e.operator, e.body(OpUnlock, 1))
	env1, err := parseSign1(raw)
	if err != nil {
		t.Fatal(err)
	}
	return e, raw, env1
}

func TestStrictSignedBaseVerifies(t *testing.T) {
	e, raw, _ := signedParts(t)
	if _, err := e.v.Verify(raw, OpUnlock); err != nil {
		t.Fatal(err)
	}
}

func TestStrictSignedTagged(t *testing.T) {
	e, raw, _ := signedParts(t)
	_, err := e.v.Verify(append([]byte{0xd2}, raw...), OpUnlock) // COSE_Sign1_Tagged
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedTrailingBytes(t *testing.T) {
	e, raw, _ := signedParts(t)
	_, err := e.v.Verify(append(bytes.Clone(raw), 0x00), OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedOversized(t *testing.T) {
	e, raw, _ := signedParts(t)
	_, err := e.v.Verify(append(bytes.Clone(raw), make([]byte, MaxSignedSize)...), OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedIndefiniteArray(t *testing.T) {
	e, raw, _ := signedParts(t)
	b := append([]byte{0x9f}, raw[1:]...)
	_, err := e.v.Verify(append(b, 0xff), OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedOtherAlgorithm(t *testing.T) {
	e, _, env1 := signedParts(t)
	env1.Protected = []byte{0xa1, 0x01, 0x26} // ES256
	b, _ := encMode.Marshal(env1)
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedExtraUnprotected(t *testing.T) {
	e, _, env1 := signedParts(t)
	m := map[uint64]any{4: []byte{1}, 13: env1.Unprotected.KCWT}
	b, _ := encMode.Marshal([]any{[]byte(env1.Protected), m, []byte(env1.Payload), []byte(env1.Signature)})
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
	m = map[uint64]any{1: -8, 13: env1.Unprotected.KCWT}
	b, _ = encMode.Marshal([]any{[]byte(env1.Protected), m, []byte(env1.Payload), []byte(env1.Signature)})
	_, err = e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedCredentialWrappedInBstr(t *testing.T) {
	// kcwt embeds the credential as a data item, never wrapped in a bstr.
	e, _, env1 := signedParts(t)
	m := map[uint64]any{13: []byte(env1.Unprotected.KCWT)}
	b, _ := encMode.Marshal([]any{[]byte(env1.Protected), m, []byte(env1.Payload), []byte(env1.Signature)})
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedShortSignature(t *testing.T) {
	e, _, env1 := signedParts(t)
	env1.Signature = env1.Signature[:63]
	b, _ := encMode.Marshal(env1)
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedDetachedPayload(t *testing.T) {
	e, _, env1 := signedParts(t)
	b, _ := encMode.Marshal([]any{[]byte(env1.Protected), map[uint64]any{13: env1.Unprotected.KCWT}, nil, []byte(env1.Signature)})
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictSignedNonShortestSignatureLength(t *testing.T) {
	e, raw, _ := signedParts(t)
	// The signature is the last item: 58 40 <64 bytes>. Re-encode its head
	// as 59 0040.
	i := len(raw) - 66
	if raw[i] != 0x58 || raw[i+1] != 0x40 {
		t.Fatalf("signature head %x", raw[i:i+2])
	}
	b := append(append(append([]byte{}, raw[:i]...), 0x59, 0x00, 0x40), raw[i+2:]...)
	_, err := e.v.Verify(b, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

// signBody signs an arbitrary payload as p (bypassing MarshalBody).
func signBody(t *testing.T, p []byte, key []byte, cwt []byte) []byte {
	t.Helper()
	s, err := signPayload(key, cose.UnprotectedHeader{int64(labelKCWT): cbor.RawMessage(cwt)}, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bodyMap(t *testing.T, e *env) map[uint64]any {
	b := e.body(OpUnlock, 1)
	m, err := bodySchema.encode(&b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A body that an authorised operator really signed, but that breaks the
// body's rules, is still malformed (step 6 comes after the signature).
func wantMalformedBody(t *testing.T, e *env, payload []byte) {
	t.Helper()
	s := signBody(t, payload, e.operator.Key, e.operator.Cert.Raw)
	_, err := e.v.Verify(s, OpUnlock)
	wantErr(t, err, ErrMalformed)
}

func TestStrictBodyBaseVerifies(t *testing.T) {
	e := newEnv(t)
	p, _ := encMode.Marshal(bodyMap(t, e))
	s := signBody(t, p, e.operator.Key, e.operator.Cert.Raw)
	if _, err := e.v.Verify(s, OpUnlock); err != nil {
		t.Fatal(err)
	}
}

func TestStrictBodyUnknownKey(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	m[7] = uint64(1)
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}

func TestStrictBodyMissingArgs(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	delete(m, 3)
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}

func TestStrictBodyCounterZero(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	m[6] = uint64(0)
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}

func TestStrictBodyCounterAbove2to53(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	m[6] = uint64(MaxCounter + 1)
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}

func TestStrictBodyShortLockID(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	m[1] = e.lockID[:7]
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}

func TestStrictBodyNonShortest(t *testing.T) {
	e := newEnv(t)
	p, _ := encMode.Marshal(bodyMap(t, e))
	// op 2 = "02 02"; re-encode the value as 18 02.
	i := bytes.Index(p, []byte{0x02, 0x02, 0x03})
	if i < 0 {
		t.Fatalf("op not found in %x", p)
	}
	np := append(append(append([]byte{}, p[:i+1]...), 0x18, 0x02), p[i+2:]...)
	wantMalformedBody(t, e, np)
}

func TestStrictBodyDuplicateKey(t *testing.T) {
	e := newEnv(t)
	p, _ := encMode.Marshal(bodyMap(t, e))
	// a6 ... → a7 ... 06 01: counter twice.
	np := append([]byte{0xa7}, p[1:]...)
	np = append(np, 0x06, 0x01)
	wantMalformedBody(t, e, np)
}

func TestStrictBodyUndefinedOp(t *testing.T) {
	e := newEnv(t)
	m := bodyMap(t, e)
	m[2] = uint64(11)
	p, _ := encMode.Marshal(m)
	wantMalformedBody(t, e, p)
}
