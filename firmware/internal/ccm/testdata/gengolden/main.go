// Command gengolden wrote ../golden.json: the outputs of an independent CCM
// implementation, pion/dtls v3.1.15's pkg/crypto/ccm (which the project used
// before firmware/internal/ccm), for deterministic pseudo-random inputs over
// every tag size and nonce size RFC 3610 allows. It lives under testdata so
// that the build, go vet and go mod tidy ignore it and pion is no dependency
// of the module. To run it again (from the module root):
//
//	go get github.com/pion/dtls/v3@v3.1.15
//	cd firmware/internal/ccm/testdata/gengolden && go run . > ../golden.json
//	cd - && go mod tidy
package main

import (
	"crypto/aes"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"

	pion "github.com/pion/dtls/v3/pkg/crypto/ccm"
)

// Case is one line of golden.json. The additional data is AAD in hex, or,
// when AADFill is not zero, AADFill bytes with byte i = i*7+3 (mod 256).
type Case struct {
	TagSize int    `json:"tag_size"`
	Key     string `json:"key"`
	Nonce   string `json:"nonce"`
	AAD     string `json:"aad,omitempty"`
	AADFill int    `json:"aad_fill,omitempty"`
	Plain   string `json:"plaintext"`
	Sealed  string `json:"sealed"`
}

func main() {
	r := rand.New(rand.NewChaCha8([32]byte([]byte("gatewayd ccm golden outputs v1.."))))
	bytesN := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	ptLens := []int{0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 255, 256, 257}
	aadLens := []int{0, 1, 11, 14, 15, 16, 17, 31, 32, 33, 100}
	var cases []Case
	add := func(tag, nonce int, aad []byte, fill, ptLen int) {
		key := bytesN([]int{16, 24, 32}[r.IntN(3)])
		n := bytesN(nonce)
		pt := bytesN(ptLen)
		if fill > 0 {
			aad = make([]byte, fill)
			for i := range aad {
				aad[i] = byte(i*7 + 3)
			}
		}
		b, err := aes.NewCipher(key)
		if err != nil {
			panic(err)
		}
		a, err := pion.NewCCM(b, tag, nonce)
		if err != nil {
			panic(err)
		}
		c := Case{TagSize: tag, Key: hex.EncodeToString(key), Nonce: hex.EncodeToString(n),
			Plain: hex.EncodeToString(pt), Sealed: hex.EncodeToString(a.Seal(nil, n, pt, aad))}
		if fill > 0 {
			c.AADFill = fill
		} else {
			c.AAD = hex.EncodeToString(aad)
		}
		cases = append(cases, c)
	}
	for tag := 4; tag <= 16; tag += 2 {
		for nonce := 7; nonce <= 13; nonce++ {
			for range 3 {
				add(tag, nonce, bytesN(aadLens[r.IntN(len(aadLens))]), 0, ptLens[r.IntN(len(ptLens))])
			}
		}
	}
	// AES-CCM-16-64-128, the parameters the protocol uses, at every length
	// class of one to five blocks.
	for _, pl := range ptLens {
		for _, al := range aadLens {
			add(8, 13, bytesN(al), 0, pl)
		}
	}
	// The encodings of l(a): the longest 2-byte one and the shortest 6-byte one.
	for _, fill := range []int{0xfeff, 0xff00, 70000} {
		add(8, 13, nil, fill, 40)
	}
	// Longer messages, so that a 2-byte counter's low byte carries.
	for _, pl := range []int{4095, 4097, 8000} {
		add(8, 13, bytesN(13), 0, pl)
	}
	e := json.NewEncoder(os.Stdout)
	for _, c := range cases {
		if err := e.Encode(c); err != nil {
			panic(err)
		}
	}
}
