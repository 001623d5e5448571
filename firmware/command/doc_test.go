package command

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// The worked examples of docs/protocol.md §12.9 are generated here, from
// fixed seeds, and the test fails if the document shows anything else.
// After a deliberate change, regenerate them with
//
//	go test ./firmware/command -run TestSpecExamples -update-doc
//
// The generated blocks are looked for, and rewritten, only inside §12 of
// the spec (from its "## 12." heading to the "## 13." one); the rest of the
// document is never touched.

var updateDoc = flag.Bool("update-doc", false, "rewrite the generated blocks of docs/protocol.md §12")

const specPath = "../../docs/protocol.md"

// The section of the spec that holds the generated blocks.
const (
	specSectionStart = "\n## 12. "
	specSectionEnd   = "\n## 13. "
)

// specSection returns the bounds of §12 in the spec's text.
func specSection(t *testing.T, text string) (int, int) {
	t.Helper()
	i := strings.Index(text, specSectionStart)
	if i < 0 || strings.Count(text, specSectionStart) != 1 {
		t.Fatalf("%s: want exactly one heading %q", specPath, strings.TrimSpace(specSectionStart))
	}
	j := strings.Index(text[i+1:], specSectionEnd)
	if j < 0 {
		t.Fatalf("%s: no heading %q after %q", specPath, strings.TrimSpace(specSectionEnd), strings.TrimSpace(specSectionStart))
	}
	return i, i + 1 + j
}

// Fixed inputs of the examples. The root and the lock are those of the
// credential example of docs/protocol.md §5.10.
var (
	exRootSeed  = bytes.Repeat([]byte{0x01}, 32)
	exAdminSeed = bytes.Repeat([]byte{0x03}, 32)
	exOperSeed  = bytes.Repeat([]byte{0x04}, 32)
	exUserSeed  = bytes.Repeat([]byte{0x05}, 32)
	exLockSeed  = bytes.Repeat([]byte{0x02}, 32)
	exLockID    = [8]byte{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18}
	exNbf       = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	exExp       = time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC)
	exNow       = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
)

type example struct {
	root, admin, oper, user ed25519.PrivateKey
	lock                    ed25519.PrivateKey
	rootKID                 []byte
	adminCWT, operCWT       []byte

	addUserBody, unlockBody       Body
	addUserSigned, unlockSigned   []byte
	addUserReq, unlockReq         []byte
	addUserResult, unlockResult   []byte
	addUserPayload, unlockPayload []byte
	unlockResultSig               []byte

	enterDFUBody                                 Body
	enterDFUSigned, enterDFUReq, enterDFUPayload []byte
}

func issueEx(t *testing.T, root ed25519.PrivateKey, kid []byte, key ed25519.PrivateKey, sub string, role cred.Role, perms cred.Perm) []byte {
	t.Helper()
	raw, err := cred.Issue(root, kid, cred.Claims{Issuer: "fleet-root", Subject: sub, Kind: cred.KindOperator,
		Role: role, Perms: perms, NotBefore: exNbf, Expiry: exExp, PublicKey: key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func seq16(start byte) (id [16]byte) {
	for i := range id {
		id[i] = start + byte(i)
	}
	return id
}

func makeExample(t *testing.T) *example {
	t.Helper()
	x := &example{
		root:  ed25519.NewKeyFromSeed(exRootSeed),
		admin: ed25519.NewKeyFromSeed(exAdminSeed),
		oper:  ed25519.NewKeyFromSeed(exOperSeed),
		user:  ed25519.NewKeyFromSeed(exUserSeed),
		lock:  ed25519.NewKeyFromSeed(exLockSeed),
	}
	x.rootKID = cred.RootKID(x.root.Public().(ed25519.PublicKey))
	x.adminCWT = issueEx(t, x.root, x.rootKID, x.admin, "admin-ann", cred.RoleAdmin, cred.AdminPerms)
	x.operCWT = issueEx(t, x.root, x.rootKID, x.oper, "op-olga", cred.RoleOperator, cred.OperatorPerms)

	x.addUserBody = Body{
		LockID: exLockID,
		Op:     OpAddUser,
		Args: Args{UserID: "rider-rita", PublicKey: x.user.Public().(ed25519.PublicKey), Role: cred.RoleRider,
			NotBefore: exNow, NotAfter: exNow.Add(30 * 24 * time.Hour)},
		CommandID: seq16(0x00),
		NotAfter:  exNow.Add(5 * time.Minute),
		Counter:   1,
	}
	x.unlockBody = Body{
		LockID:    exLockID,
		Op:        OpUnlock,
		CommandID: seq16(0x10),
		NotAfter:  exNow.Add(5 * time.Minute),
		Counter:   uint64(exNow.UnixMilli()), // a time-based counter (milliseconds)
	}
	x.enterDFUBody = Body{
		LockID:    exLockID,
		Op:        OpEnterDFU,
		Args:      Args{InitHash: bytes.Repeat([]byte{0x5a}, InitHashLen)},
		CommandID: seq16(0x20),
		NotAfter:  exNow.Add(5 * time.Minute),
		Counter:   2,
	}
	var err error
	if x.enterDFUSigned, err = Sign(x.admin, x.adminCWT, x.enterDFUBody); err != nil {
		t.Fatal(err)
	}
	x.enterDFUPayload, _ = MarshalBody(&x.enterDFUBody)
	if x.enterDFUReq, err = MarshalRequest(&Request{Op: OpEnterDFU, RequestID: 3, Signed: x.enterDFUSigned}); err != nil {
		t.Fatal(err)
	}
	if x.addUserSigned, err = Sign(x.admin, x.adminCWT, x.addUserBody); err != nil {
		t.Fatal(err)
	}
	if x.unlockSigned, err = Sign(x.oper, x.operCWT, x.unlockBody); err != nil {
		t.Fatal(err)
	}
	x.addUserPayload, _ = MarshalBody(&x.addUserBody)
	x.unlockPayload, _ = MarshalBody(&x.unlockBody)
	if x.addUserReq, err = MarshalRequest(&Request{Op: OpAddUser, RequestID: 1, Signed: x.addUserSigned}); err != nil {
		t.Fatal(err)
	}
	if x.unlockReq, err = MarshalRequest(&Request{Op: OpUnlock, RequestID: 2, Signed: x.unlockSigned}); err != nil {
		t.Fatal(err)
	}
	// The lock signs both results (§12.7.5) with its key (seed 02, §5.10).
	addUserRes := Result{RequestID: 1, Status: StatusOK, LockState: StateLocked,
		Battery: 87, Firmware: "1.0.0", Clock: exNow.Add(2 * time.Second), CommandID: x.addUserBody.CommandID[:]}
	if err = SignResult(x.lock, exLockID[:], OpAddUser, x.addUserBody.Counter, &addUserRes); err != nil {
		t.Fatal(err)
	}
	if x.addUserResult, err = MarshalResult(OpAddUser, &addUserRes); err != nil {
		t.Fatal(err)
	}
	unlockRes := Result{RequestID: 2, Status: StatusOK, LockState: StateUnlocked,
		Battery: 87, Firmware: "1.0.0", Clock: exNow.Add(3 * time.Second), CommandID: x.unlockBody.CommandID[:]}
	if err = SignResult(x.lock, exLockID[:], OpUnlock, x.unlockBody.Counter, &unlockRes); err != nil {
		t.Fatal(err)
	}
	if x.unlockResult, err = MarshalResult(OpUnlock, &unlockRes); err != nil {
		t.Fatal(err)
	}
	x.unlockResultSig = unlockRes.Signature
	// The examples must verify, as the lock would check them.
	roots := cred.Roots{}
	roots.Add(x.rootKID, x.root.Public().(ed25519.PublicKey))
	v := &Verifier{Roots: roots, LockID: exLockID, Now: func() time.Time { return exNow }}
	for _, c := range []struct {
		req []byte
	}{{x.addUserReq}, {x.unlockReq}, {x.enterDFUReq}} {
		r, err := ParseRequest(c.req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(r.Signed, r.Op); err != nil {
			t.Fatalf("example %v does not verify: %v", r.Op, err)
		}
	}
	return x
}

// blocks returns the generated blocks of the spec, by name.
func (x *example) blocks(t *testing.T) map[string]string {
	pub := func(k ed25519.PrivateKey) string { return hex.EncodeToString(k.Public().(ed25519.PublicKey)) }
	kid := func(k cred.Kind, sub string) string {
		b, err := cred.KID(k, sub)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(b)
	}
	env1, err := parseSign1(x.unlockSigned)
	if err != nil {
		t.Fatal(err)
	}
	tbs := cred.SigStructure(env1.Payload)
	resEnv, err := parseResultSign1(x.unlockResultSig)
	if err != nil {
		t.Fatal(err)
	}

	var inputs strings.Builder
	row := func(k, v string) { fmt.Fprintf(&inputs, "%-34s %s\n", k, v) }
	row("fleet root seed", "32 bytes of 01")
	row("fleet root public key", pub(x.root))
	row("root kid", hex.EncodeToString(x.rootKID))
	row("lock ID", hex.EncodeToString(exLockID[:]))
	row("admin \"admin-ann\" seed", "32 bytes of 03")
	row("admin public key", pub(x.admin))
	row("admin kid = SignerKey", kid(cred.KindOperator, "admin-ann"))
	row("operator \"op-olga\" seed", "32 bytes of 04")
	row("operator public key", pub(x.oper))
	row("operator kid = SignerKey", kid(cred.KindOperator, "op-olga"))
	row("user \"rider-rita\" seed", "32 bytes of 05")
	row("user public key", pub(x.user))
	row("user key_id (list-users)", hex.EncodeToString(func() []byte { k := KeyID(x.user.Public().(ed25519.PublicKey)); return k[:] }()))
	row("credentials nbf / exp", fmt.Sprintf("%d / %d (2025-01-01 / 2045-01-01)", exNbf.Unix(), exExp.Unix()))
	row("lock clock at verification", fmt.Sprintf("%d (%s)", exNow.Unix(), exNow.Format(time.RFC3339)))
	row("lock seed (signs results)", "32 bytes of 02")
	row("lock public key", pub(x.lock))

	return map[string]string{
		"inputs":              inputs.String(),
		"add-user-body":       annotate(x.addUserPayload, bodyHint(OpAddUser)),
		"add-user-signed":     annotate(x.addUserSigned, signedHint(OpAddUser)),
		"add-user-request":    hexRows(x.addUserReq),
		"add-user-result":     annotate(x.addUserResult, resultHint()),
		"add-user-result-hex": hexRows(x.addUserResult),
		"unlock-body":         annotate(x.unlockPayload, bodyHint(OpUnlock)),
		"unlock-request":      annotate(x.unlockReq, requestHint(OpUnlock)),
		"unlock-request-hex":  hexRows(x.unlockReq),
		"unlock-tbs":          hexRows(tbs),
		"unlock-result":       annotate(x.unlockResult, resultHint()),
		"unlock-result-hex":   hexRows(x.unlockResult),
		"unlock-result-sig":   annotate(x.unlockResultSig, resultSigHint()),
		"unlock-result-tbs":   hexRows(resultSigStructure(resEnv.Payload)),
		"enter-dfu-body":      annotate(x.enterDFUPayload, bodyHint(OpEnterDFU)),
		"enter-dfu-request":   hexRows(x.enterDFUReq),
	}
}

// TestSpecExamples compares the generated blocks with the spec's.
func TestSpecExamples(t *testing.T) {
	x := makeExample(t)
	blocks := x.blocks(t)
	doc, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("reading the spec: %v", err)
	}
	lo, hi := specSection(t, string(doc))
	text := string(doc[lo:hi]) // §12 only
	for name, want := range blocks {
		begin := "<!-- generated: " + name + " -->\n"
		if n := strings.Count(string(doc), begin); n != 1 {
			t.Errorf("%s has %d blocks %q, want 1 (in §12)", specPath, n, name)
			continue
		}
		i := strings.Index(text, begin)
		if i < 0 {
			t.Errorf("%s has block %q outside §12", specPath, name)
			continue
		}
		i += len(begin)
		j := strings.Index(text[i:], "<!-- end -->")
		if j < 0 {
			t.Errorf("block %q is not closed", name)
			continue
		}
		fenced := "```\n" + want + "```\n"
		if got := text[i : i+j]; got != fenced {
			if *updateDoc {
				text = text[:i] + fenced + text[i+j:]
				continue
			}
			t.Errorf("block %q differs from the code's output; regenerate with -update-doc.\n got:\n%s\nwant:\n%s", name, got, fenced)
		}
	}
	if *updateDoc && text != string(doc[lo:hi]) {
		out := string(doc[:lo]) + text + string(doc[hi:])
		if err := os.WriteFile(specPath, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("updated §12 of", specPath)
	}
	// The hex of both requests and results must appear in full in §12,
	// whatever the layout.
	flat := strings.Join(strings.Fields(text), "")
	for _, b := range [][]byte{x.addUserReq, x.unlockReq, x.addUserResult, x.unlockResult, x.enterDFUReq} {
		if !strings.Contains(flat, hex.EncodeToString(b)) {
			t.Errorf("the spec does not show %x", b)
		}
	}
}

// hexRows prints b as rows of 32 bytes.
func hexRows(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		n := min(32, len(b))
		s.WriteString(hex.EncodeToString(b[:n]))
		s.WriteByte('\n')
		b = b[n:]
	}
	return s.String()
}

// An annotated dump in the style of docs/protocol.md §5.10: one line per
// CBOR head, indented by nesting, with a comment at column 42.

type hint struct {
	name  string
	keys  map[uint64]*hint // map: the hint of each key's value
	elems []*hint          // array: the hint of each element
	each  *hint            // array: the hint of every element
	embed *hint            // bstr: its content is CBOR, shown nested
	raw   bool             // bstr or item: show as hex rows only
	enum  func(uint64) string
}

func h(name string) *hint { return &hint{name: name} }

func timeHint(name string) *hint {
	return &hint{name: name, enum: func(n uint64) string {
		if n == 0 {
			return "unset"
		}
		return time.Unix(int64(n), 0).UTC().Format(time.RFC3339)
	}}
}

func opHint() *hint {
	return &hint{name: "op", enum: func(n uint64) string { return Op(n).String() }}
}

func argsHint(op Op) *hint {
	m := map[uint64]*hint{}
	for _, f := range ops[op].args {
		switch f.d {
		case argNotBefore, argNotAfter, argTime:
			m[f.key] = timeHint(f.d.name)
		default:
			m[f.key] = h(f.d.name)
		}
	}
	return &hint{name: "args", keys: m}
}

func bodyHint(op Op) *hint {
	return &hint{name: "body", keys: map[uint64]*hint{
		1: h("lock_id"), 2: opHint(), 3: argsHint(op), 4: h("command_id"),
		5: timeHint("not_after"), 6: h("counter"),
	}}
}

func signedHint(op Op) *hint {
	return &hint{name: "COSE_Sign1", elems: []*hint{
		{name: "protected", embed: &hint{name: "protected", keys: map[uint64]*hint{1: {name: "alg", enum: func(uint64) string { return "" }}}}},
		{name: "unprotected", keys: map[uint64]*hint{13: {name: "kcwt: credential (§5)", raw: true}, 4: h("root kid")}},
		{name: "payload", embed: bodyHint(op)},
		{name: "signature"},
	}}
}

func requestHint(op Op) *hint {
	return &hint{name: "request", keys: map[uint64]*hint{
		1: opHint(), 2: h("request_id"), 3: argsHint(op), 4: {name: "signed", embed: signedHint(op)},
	}}
}

func resultHint() *hint {
	return &hint{name: "result", keys: map[uint64]*hint{
		1: h("request_id"),
		2: {name: "status", enum: func(n uint64) string { return Status(n).String() }},
		3: {name: "lock_state", enum: func(n uint64) string { return LockState(n).String() }},
		4: h("battery"), 5: h("firmware"), 6: timeHint("clock"), 7: h("command_id"),
		8: h("detail"), 9: h("data"), 10: {name: "signature (§12.7.5)", raw: true},
	}}
}

func resultSigHint() *hint {
	return &hint{name: "COSE_Sign1", elems: []*hint{
		{name: "protected", embed: &hint{name: "protected", keys: map[uint64]*hint{
			1: {name: "alg", enum: func(uint64) string { return "" }}, 16: h("typ")}}},
		{name: "unprotected", keys: map[uint64]*hint{4: h("kid: lock ID")}},
		{name: "payload", embed: &hint{name: "result-statement", keys: map[uint64]*hint{
			1: h("lock_id"), 2: h("command_id"), 3: opHint(),
			4: {name: "status", enum: func(n uint64) string { return Status(n).String() }},
			5: {name: "lock_state", enum: func(n uint64) string { return LockState(n).String() }},
			6: h("counter"), 7: timeHint("clock"), 8: h("data_sha256"),
		}}},
		{name: "signature"},
	}}
}

func annotate(b []byte, root *hint) string {
	var a annotator
	rest := a.item(b, 0, root, true)
	if len(rest) != 0 {
		panic("trailing bytes")
	}
	return a.out.String()
}

type annotator struct{ out strings.Builder }

func (a *annotator) line(depth int, hexPart, comment string) {
	s := strings.Repeat("   ", depth) + hexPart
	if comment != "" {
		col := 42 + 2*depth
		if len(s)+2 > col {
			col = len(s) + 2
		}
		s += strings.Repeat(" ", col-len(s)) + comment
	}
	a.out.WriteString(strings.TrimRight(s, " ") + "\n")
}

// head reads a CBOR head: major type, argument, head length.
func head(b []byte) (byte, uint64, int) {
	m, ai := b[0]>>5, b[0]&0x1f
	switch {
	case ai < 24:
		return m, uint64(ai), 1
	case ai == 24:
		return m, uint64(b[1]), 2
	case ai == 25:
		return m, uint64(binary.BigEndian.Uint16(b[1:])), 3
	case ai == 26:
		return m, uint64(binary.BigEndian.Uint32(b[1:])), 5
	}
	return m, binary.BigEndian.Uint64(b[1:]), 9
}

// itemLen returns the length of the first item of b.
func itemLen(b []byte) int {
	m, n, hl := head(b)
	switch m {
	case 2, 3:
		return hl + int(n)
	case 4, 5:
		l := hl
		cnt := int(n)
		if m == 5 {
			cnt *= 2
		}
		for range cnt {
			l += itemLen(b[l:])
		}
		return l
	}
	return hl
}

// item prints the first item of b and returns the rest. named is false
// for a map's value, whose name is on its key's line.
func (a *annotator) item(b []byte, depth int, hn *hint, named bool) []byte {
	if hn == nil {
		hn = &hint{}
	}
	m, n, hl := head(b)
	hd := hex.EncodeToString(b[:1])
	if hl > 1 {
		hd += " " + hex.EncodeToString(b[1:hl])
	}
	label := ""
	if named && hn.name != "" {
		label = hn.name + ": "
	}
	rows := func(b []byte) {
		for _, r := range strings.Split(strings.TrimSuffix(hexRows(b), "\n"), "\n") {
			a.line(depth+1, r, "")
		}
	}
	switch {
	case hn.raw:
		l := itemLen(b)
		a.line(depth, "", fmt.Sprintf("%s(%d bytes, shown as hex)", label, l))
		for _, r := range strings.Split(strings.TrimSuffix(hexRows(b[:l]), "\n"), "\n") {
			a.line(depth, r, "")
		}
		return b[l:]
	case m == 0:
		c := fmt.Sprint(n)
		if hn.enum != nil {
			if e := hn.enum(n); e != "" {
				c += " (" + e + ")"
			}
		}
		a.line(depth, hd, label+c)
		return b[hl:]
	case m == 1:
		a.line(depth, hd, fmt.Sprintf("%s%d", label, -1-int64(n)))
		return b[hl:]
	case m == 3:
		s := b[hl : hl+int(n)]
		a.line(depth, hd+" "+hex.EncodeToString(s), fmt.Sprintf("%s%q", label, s))
		return b[hl+int(n):]
	case m == 2 && hn.embed != nil:
		a.line(depth, hd, fmt.Sprintf("%sbstr(%d) containing", label, n))
		if rest := a.item(b[hl:hl+int(n)], depth+1, hn.embed, true); len(rest) != 0 {
			panic("embedded item has trailing bytes")
		}
		return b[hl+int(n):]
	case m == 2:
		s := b[hl : hl+int(n)]
		if n <= 16 {
			a.line(depth, hd+" "+hex.EncodeToString(s), fmt.Sprintf("%sh'%x'", label, s))
		} else {
			a.line(depth, hd, fmt.Sprintf("%sbstr(%d)", label, n))
			rows(s)
		}
		return b[hl+int(n):]
	case m == 4:
		a.line(depth, hd, fmt.Sprintf("%sarray(%d)", label, n))
		rest := b[hl:]
		for i := range int(n) {
			eh := hn.each
			if i < len(hn.elems) {
				eh = hn.elems[i]
			}
			rest = a.item(rest, depth+1, eh, true)
		}
		return rest
	case m == 5:
		a.line(depth, hd, fmt.Sprintf("%smap(%d)", label, n))
		rest := b[hl:]
		for range int(n) {
			km, k, khl := head(rest)
			if km != 0 {
				panic("non-uint key")
			}
			vh := hn.keys[k]
			if vh == nil {
				vh = &hint{}
			}
			a.line(depth+1, hex.EncodeToString(rest[:khl]), strings.TrimSpace(fmt.Sprintf("%d %s", k, vh.name)))
			rest = a.item(rest[khl:], depth+2, vh, false)
		}
		return rest
	}
	panic(fmt.Sprintf("unsupported major type %d", m))
}
