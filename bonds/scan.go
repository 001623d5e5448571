package bonds

import "bytes"

// topStrings reads, from the JSON object v, the values of the top-level
// keys named in keys that are plain strings (no escapes), into vals
// (slices of v, nil for a key that is absent; nothing is allocated),
// without decoding the rest: the start-up
// reads (Reconcile, Evict, Pending) need a few fields of every record,
// and encoding/json costs about 10 µs a record here whatever it keeps
// (issue 14). ok is false, and the caller decodes with encoding/json
// instead, unless v is one object whose strings, objects and arrays are
// all closed, with nothing after it, and each wanted key present holds a
// string without a backslash, at most once. It is a fast path, not a
// validator: a record it reads may still fail a strict decode (db check
// and the calls that read records whole do that).
func topStrings(v []byte, keys []string, vals [][]byte) (ok bool) {
	clear(vals)
	seen := 0 // bit i: keys[i] found
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return false
	}
	depth, expectKey := 0, false
	for i < len(v) {
		c := v[i]
		switch c {
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
			i++
		case '}', ']':
			depth--
			i++
			if depth == 0 {
				return skipSpace(v, i) == len(v)
			}
			if depth < 0 {
				return false
			}
		case ',':
			expectKey = depth == 1
			i++
		case '"':
			end := stringEnd(v, i)
			if end < 0 {
				return false
			}
			if depth == 1 && expectKey {
				key := v[i+1 : end]
				i = skipSpace(v, end+1)
				if i >= len(v) || v[i] != ':' {
					return false
				}
				i = skipSpace(v, i+1)
				expectKey = false
				for k, name := range keys {
					if string(key) != name {
						continue
					}
					if seen&(1<<k) != 0 || i >= len(v) || v[i] != '"' {
						return false
					}
					vend := stringEnd(v, i)
					if vend < 0 || bytes.IndexByte(v[i+1:vend], '\\') >= 0 {
						return false
					}
					seen |= 1 << k
					vals[k] = v[i+1 : vend : vend]
					i = vend + 1
					break
				}
				continue
			}
			i = end + 1
		default:
			i++
		}
	}
	return false
}

// stringEnd returns the index of the quote closing the JSON string that
// opens at v[i], or -1.
func stringEnd(v []byte, i int) int {
	for j := i + 1; ; {
		k := bytes.IndexByte(v[j:], '"') // vectorised: a credential's base64 is most of a lock record
		if k < 0 {
			return -1
		}
		q, n := j+k, 0
		for p := q - 1; p > i && v[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		j = q + 1
	}
}

func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}
