package command

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Result signatures (docs/protocol.md §12.7.5). A lock signs every result
// that carries a command ID with its own credential key, so that an
// operator can tell the lock's word from a gateway's or a broker's.

// Limits and constants of result signatures.
const (
	// MaxResultSignatureSize is the largest result signature (result key
	// 10) accepted, in bytes; a lock makes them of at most 206 bytes.
	MaxResultSignatureSize = 256
	// ResultSignatureType is the COSE "typ" (RFC 9596, label 16) in the
	// protected header of every result signature. It separates a result
	// signature from every other signature in the system: credentials and
	// signed commands have the protected header {1: -8} exactly, and an
	// EDHOC signature's protected slot is the signer's ID_CRED, which never
	// holds label 16.
	ResultSignatureType = "application/gatewayd-result+cose"
	// MaxSignedResultData is the largest data item (result key 9, its
	// encoded bytes) a signed result may carry so that it fits
	// MaxResultSize whatever its other fields: 2035 bytes minus 74 for
	// the other keys at their largest (request ID, status, lock state,
	// battery, a 32-byte firmware version, clock, command ID, key 9) and
	// 209 for key 10 with the largest signature (206 bytes: a counter of
	// 2^53 and a data digest). A lock answering a signed read-audit cuts
	// the page to fewer entries to stay within it.
	MaxSignedResultData = MaxResultSize - 74 - 209
)

// resultProtected is the exact protected header of a result signature:
// bstr .cbor {1: -8, 16: ResultSignatureType}.
var resultProtected []byte

// init runs after codec.go's (files initialise in name order), which sets
// encMode.
func init() {
	b, err := encMode.Marshal(map[int64]any{1: int64(-8), 16: ResultSignatureType})
	if err != nil {
		panic(err)
	}
	resultProtected = b
}

// ResultProtected returns the exact protected header every result
// signature carries (the bytes inside its bstr): {1: -8, 16:
// ResultSignatureType} in deterministic encoding.
func ResultProtected() []byte { return bytes.Clone(resultProtected) }

// ResultStatement is what a lock signs about one of its results: the
// payload of the result signature.
//
//	ResultStatement = { 1: lock_id, 2: command_id, 3: op, 4: status,
//	                    5: lock_state, 6: counter, 7: clock, ? 8: data_sha256 }
type ResultStatement struct {
	// LockID is the signing lock's ID (the kid of its credential).
	LockID [8]byte
	// CommandID is the signed command the result answers.
	CommandID [16]byte
	// Op is the command's operation (the request's op).
	Op Op
	// Status and LockState are the result's (keys 2 and 3).
	Status    Status
	LockState LockState
	// Counter is the signed command's counter (its signer's, 1..MaxCounter).
	Counter uint64
	// Clock is the lock's clock in the result (key 6); zero when never set.
	Clock time.Time
	// DataSHA256 is the SHA-256 of the result's data (key 9, its encoded
	// bytes), nil when the result has no data.
	DataSHA256 []byte
}

var statementSchema = &schema[ResultStatement]{
	name: "result statement",
	fields: []field[ResultStatement]{
		idField(1, "lock_id", func(s *ResultStatement) []byte { return s.LockID[:] }),
		idField(2, "command_id", func(s *ResultStatement) []byte { return s.CommandID[:] }),
		opField(3, func(s *ResultStatement) *Op { return &s.Op }),
		{key: 4, name: "status", required: true,
			enc: func(s *ResultStatement) (any, bool, error) {
				if !s.Status.Valid() {
					return nil, false, fmt.Errorf("undefined status %d", s.Status)
				}
				return uint64(s.Status), true, nil
			},
			dec: func(s *ResultStatement, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, uint64(maxStatus))
				s.Status = Status(n)
				return err
			}},
		{key: 5, name: "lock_state", required: true,
			enc: func(s *ResultStatement) (any, bool, error) {
				if !s.LockState.Valid() {
					return nil, false, fmt.Errorf("undefined lock state %d", s.LockState)
				}
				return uint64(s.LockState), true, nil
			},
			dec: func(s *ResultStatement, raw cbor.RawMessage) error {
				n, err := decUint(raw, 0, uint64(StateJammed))
				s.LockState = LockState(n)
				return err
			}},
		counterField(6, func(s *ResultStatement) *uint64 { return &s.Counter }),
		{key: 7, name: "clock", required: true,
			enc: func(s *ResultStatement) (any, bool, error) {
				t, err := encTime(s.Clock)
				return t, true, err
			},
			dec: func(s *ResultStatement, raw cbor.RawMessage) (err error) {
				s.Clock, err = decTime(raw)
				return err
			}},
		{key: 8, name: "data_sha256",
			enc: func(s *ResultStatement) (any, bool, error) {
				if s.DataSHA256 == nil {
					return nil, false, nil
				}
				if len(s.DataSHA256) != sha256.Size {
					return nil, false, fmt.Errorf("data digest of %d bytes, want 32", len(s.DataSHA256))
				}
				return s.DataSHA256, true, nil
			},
			dec: func(s *ResultStatement, raw cbor.RawMessage) (err error) {
				s.DataSHA256, err = decBytes(raw, sha256.Size)
				return err
			}},
	},
}

// StatementOf returns the statement a lock signs for r, its result of the
// signed command with operation op and counter counter. r must carry the
// command ID (a result without one is never signed).
func StatementOf(lockID [8]byte, op Op, counter uint64, r *Result) (ResultStatement, error) {
	if len(r.CommandID) != 16 {
		return ResultStatement{}, fmt.Errorf("%w: only a result with a command ID is signed", ErrMalformed)
	}
	s := ResultStatement{LockID: lockID, Op: op, Status: r.Status, LockState: r.LockState,
		Counter: counter, Clock: r.Clock}
	copy(s.CommandID[:], r.CommandID)
	if r.Data != nil {
		h := sha256.Sum256(r.Data)
		s.DataSHA256 = h[:]
	}
	return s, nil
}

// MarshalStatement returns the deterministic encoding of s: the payload of
// its result signature. Errors wrap ErrMalformed or ErrUnknownOp.
func MarshalStatement(s *ResultStatement) ([]byte, error) {
	b, err := statementSchema.marshal(s)
	if err != nil {
		return nil, wrapMalformed(err)
	}
	return b, nil
}

// SignResult signs r, the result of the signed command with operation op
// and counter counter, as the lock whose credential kid (= lock ID) is
// lockKID and whose private key is key: it sets r.Signature (result key
// 10) to a COSE_Sign1 over [StatementOf]. Ed25519 is deterministic: the
// same inputs give the same bytes. Errors wrap ErrMalformed.
func SignResult(key ed25519.PrivateKey, lockKID []byte, op Op, counter uint64, r *Result) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: private key of %d bytes", ErrMalformed, len(key))
	}
	if len(lockKID) != 8 {
		return fmt.Errorf("%w: lock kid of %d bytes, want 8", ErrMalformed, len(lockKID))
	}
	s, err := StatementOf([8]byte(lockKID), op, counter, r)
	if err != nil {
		return err
	}
	payload, err := MarshalStatement(&s)
	if err != nil {
		return err
	}
	raw, err := coseSign1(key,
		cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmEdDSA, cose.HeaderLabelType: ResultSignatureType},
		cose.UnprotectedHeader{cose.HeaderLabelKeyID: bytes.Clone(lockKID)},
		payload, "signing a result", "encoding a result signature")
	if err != nil {
		return err
	}
	// Self-check: never hand out a signature a verifier would refuse.
	env, err := parseResultSign1(raw)
	if err != nil {
		return fmt.Errorf("%w: go-cose output: %w", ErrInternal, err)
	}
	pub, _ := key.Public().(ed25519.PublicKey)
	if !ed25519.Verify(pub, resultSigStructure(env.Payload), env.Signature) {
		return fmt.Errorf("%w: go-cose result signature does not verify", ErrInternal)
	}
	r.Signature = raw
	return nil
}

// resultSigStructure is the COSE Sig_structure (RFC 9052 §4.4) of a result
// signature: ["Signature1", h'<resultProtected>', h”, payload].
func resultSigStructure(payload []byte) []byte {
	b, _ := encMode.Marshal([]any{"Signature1", resultProtected, []byte{}, payload})
	return b
}

type resultUnprotected struct {
	KID byteString `cbor:"4,keyasint"`
}

type resultSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   byteString
	Unprotected resultUnprotected
	Payload     byteString
	Signature   byteString
}

// parseResultSign1 decodes a result signature's envelope strictly. Errors
// wrap ErrMalformed.
func parseResultSign1(raw []byte) (*resultSign1, error) {
	if len(raw) > MaxResultSignatureSize {
		return nil, fmt.Errorf("%w: result signature of %d bytes, limit %d", ErrMalformed, len(raw), MaxResultSignatureSize)
	}
	if len(raw) == 0 || raw[0] != 0x84 {
		return nil, fmt.Errorf("%w: result signature must be an untagged array of 4 (COSE_Sign1)", ErrMalformed)
	}
	var env resultSign1
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: result signature: %w", ErrMalformed, err)
	}
	if !bytes.Equal(env.Protected, resultProtected) {
		return nil, fmt.Errorf("%w: result signature's protected header must be {1: -8, 16: %q}", ErrMalformed, ResultSignatureType)
	}
	if len(env.Unprotected.KID) != 8 {
		return nil, fmt.Errorf("%w: result signature's unprotected header must be {4: lock kid of 8 bytes}", ErrMalformed)
	}
	if len(env.Payload) == 0 {
		return nil, fmt.Errorf("%w: result signature: empty payload", ErrMalformed)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: result signature of %d bytes, want 64", ErrMalformed, len(env.Signature))
	}
	if err := sameEncoding(raw, func() ([]byte, error) { return encMode.Marshal(&env) }); err != nil {
		return nil, fmt.Errorf("%w: result signature: %w", ErrMalformed, err)
	}
	return &env, nil
}

// VerifyResultSignature checks sig, a result signature, against lock, the
// lock's credential as verified by the caller ([cred.Parse] under the
// fleet roots: it chains to a trusted root). The checks, in order:
//
//  1. sig is at most MaxResultSignatureSize bytes and an untagged
//     COSE_Sign1 in deterministic CBOR: protected exactly [ResultProtected],
//     unprotected exactly {4: 8-byte kid}, a non-empty payload, a 64-byte
//     signature (ErrMalformed);
//  2. lock is a lock credential and its kid is the signature's kid
//     (ErrSignerRejected);
//  3. the Ed25519 signature over the Sig_structure verifies under lock's
//     key (ErrBadSignature);
//  4. the payload is a ResultStatement, decoded strictly (ErrMalformed);
//  5. its lock ID is lock's kid (ErrWrongLock).
//
// It does not compare the statement with a result or with what the
// verifier expects: [VerifyResult] does. It never puts the signature in an
// error.
func VerifyResultSignature(sig []byte, lock *cred.Cert) (*ResultStatement, error) {
	env, err := parseResultSign1(sig)
	if err != nil {
		return nil, err
	}
	if lock == nil || lock.Kind != cred.KindLock {
		return nil, fmt.Errorf("%w: a result is signed by a lock credential only", ErrSignerRejected)
	}
	if !bytes.Equal(lock.KID, env.Unprotected.KID) {
		return nil, fmt.Errorf("%w: signed by lock kid %x, the credential is lock %x", ErrSignerRejected,
			[]byte(env.Unprotected.KID), lock.KID)
	}
	if len(lock.PublicKey) != ed25519.PublicKeySize || !ed25519.Verify(lock.PublicKey, resultSigStructure(env.Payload), env.Signature) {
		return nil, fmt.Errorf("%w: result signature does not verify under lock %x's key", ErrBadSignature, lock.KID)
	}
	var s ResultStatement
	if err := decodeData(statementSchema, env.Payload, &s); err != nil {
		return nil, err
	}
	if !bytes.Equal(s.LockID[:], lock.KID) {
		return nil, fmt.Errorf("%w: statement names lock %x, signed with lock %x's key", ErrWrongLock, s.LockID, lock.KID)
	}
	return &s, nil
}

// ResultExpect is what the verifier of a result knows independently of it:
// the command it sent (or is looking up).
type ResultExpect struct {
	// LockID is the lock the command was for.
	LockID [8]byte
	// CommandID is the command's ID.
	CommandID [16]byte
	// Op is the command's operation.
	Op Op
	// Counter is the command's counter; 0 leaves it unchecked (a verifier
	// that knows only the command ID).
	Counter uint64
}

// VerifyResult checks that r, a lock's result, is signed by lock (a lock
// credential the caller verified under the fleet roots) and answers the
// command want describes. In order:
//
//  1. r carries a signature (ErrUnsignedResult: the lock signs only
//     results with a command ID, §12.7.5; the error says why this one has
//     none);
//  2. [VerifyResultSignature] (ErrMalformed, ErrSignerRejected,
//     ErrBadSignature, ErrWrongLock);
//  3. the statement's lock ID is want.LockID (ErrWrongLock);
//  4. its command ID, op and (if want.Counter is not 0) counter are
//     want's (ErrResultMismatch: the result of another command, replayed);
//  5. r's command ID, status, lock state, clock and data are those the
//     statement signs (ErrResultMismatch: changed after signing).
//
// Battery, firmware, detail and request ID are not signed.
func VerifyResult(r *Result, lock *cred.Cert, want ResultExpect) (*ResultStatement, error) {
	if r.Signature == nil {
		if r.CommandID == nil {
			return nil, fmt.Errorf("%w: the lock refused the command (%v) before it verified it, so it did not sign", ErrUnsignedResult, r.Status)
		}
		return nil, fmt.Errorf("%w: the result (%v) carries a command ID but no signature", ErrUnsignedResult, r.Status)
	}
	s, err := VerifyResultSignature(r.Signature, lock)
	if err != nil {
		return nil, err
	}
	if s.LockID != want.LockID {
		return nil, fmt.Errorf("%w: signed by lock %x, the command was for lock %x", ErrWrongLock, s.LockID, want.LockID)
	}
	if s.CommandID != want.CommandID {
		return nil, fmt.Errorf("%w: signed for command %x, not %x (a result of another command)", ErrResultMismatch,
			s.CommandID, want.CommandID)
	}
	if s.Op != want.Op {
		return nil, fmt.Errorf("%w: signed for %v, the command is %v", ErrResultMismatch, s.Op, want.Op)
	}
	if want.Counter != 0 && s.Counter != want.Counter {
		return nil, fmt.Errorf("%w: signed for counter %d, the command has %d", ErrResultMismatch, s.Counter, want.Counter)
	}
	got, err := StatementOf(s.LockID, s.Op, s.Counter, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrResultMismatch, err)
	}
	switch {
	case got.CommandID != s.CommandID:
		return nil, fmt.Errorf("%w: result names command %x, the signature %x", ErrResultMismatch, got.CommandID, s.CommandID)
	case got.Status != s.Status:
		return nil, fmt.Errorf("%w: result says %v, the lock signed %v", ErrResultMismatch, got.Status, s.Status)
	case got.LockState != s.LockState:
		return nil, fmt.Errorf("%w: result says %v, the lock signed %v", ErrResultMismatch, got.LockState, s.LockState)
	case !got.Clock.Equal(s.Clock):
		return nil, fmt.Errorf("%w: result's clock %s, the lock signed %s", ErrResultMismatch,
			fmtTime(got.Clock), fmtTime(s.Clock))
	case !bytes.Equal(got.DataSHA256, s.DataSHA256):
		return nil, fmt.Errorf("%w: result's data is not the data the lock signed", ErrResultMismatch)
	}
	return s, nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "0 (never set)"
	}
	return t.UTC().Format(time.RFC3339)
}

// String describes s for humans (no signature in it).
func (s *ResultStatement) String() string {
	return fmt.Sprintf("command %s %v: %v, %v, counter %d, clock %s, signed by lock %s",
		hex.EncodeToString(s.CommandID[:]), s.Op, s.Status, s.LockState, s.Counter, fmtTime(s.Clock),
		hex.EncodeToString(s.LockID[:]))
}
