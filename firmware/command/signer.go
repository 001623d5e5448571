package command

import (
	"crypto/ed25519"
	"encoding/hex"

	"github.com/gatewayd/gatewayd/firmware/cred"
)

// Signer names who a signed command claims as its signer, for logs: the
// subject of its credential when that credential was issued by one of
// v.Roots (whether or not it is valid now or may sign commands), or
// RootKeyPrefix and the kid of a trusted root; ok is false otherwise (a
// credential of an unknown root, malformed input), and then the name
// would be the sender's to choose. It does not check the signature: a
// forgery that carries a real operator's credential is named after that
// operator.
func (v *Verifier) Signer(signed []byte) (name string, ok bool) {
	if len(signed) > MaxSignedSize {
		return "", false
	}
	env, err := parseSign1(signed)
	if err != nil {
		return "", false
	}
	if env.Unprotected.KCWT != nil {
		c, err := cred.Parse(env.Unprotected.KCWT, v.Roots)
		if err != nil {
			return "", false
		}
		return c.Subject, true
	}
	kid := env.Unprotected.KID
	if root, ok := v.Roots[string(kid)]; ok && len(root) == ed25519.PublicKeySize {
		return RootKeyPrefix + hex.EncodeToString(kid), true
	}
	return "", false
}
