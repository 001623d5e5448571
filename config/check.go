package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Problem is one thing wrong with a configuration: the key it is about
// ("mqtt.brokers"; "" for the file as a whole), where the key is in the
// file (Line and Col from 1; 0 when the file does not set it) and what to
// change.
type Problem struct {
	Key       string
	Line, Col int
	Msg       string
}

// String is the problem as gatewayd config check prints it: "line 3,
// column 1: mqtt.brokrs: unknown key (did you mean mqtt.brokers?)".
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d, column %d: ", p.Line, p.Col)
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Check decodes a configuration as Parse does, but reports every problem
// it finds instead of the first: a TOML syntax error (with its position;
// nothing after it can be read), each unknown key (with the known key it
// is probably a misspelling of), each value of the wrong type or format,
// and each value out of range. The Config is returned, with defaults,
// whenever the file could be read as TOML, so CheckFiles can look at the
// files it names; it is only usable when there are no problems.
func Check(b []byte) (*Config, []Problem) {
	src := string(b)
	var raw map[string]any
	if _, err := toml.Decode(src, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, []Problem{{Key: pe.LastKey, Line: pe.Position.Line, Col: pe.Position.Col, Msg: pe.Message}}
		}
		return nil, []Problem{{Msg: err.Error()}}
	}
	known := KnownKeys()
	isKnown := map[string]bool{}
	tables := map[string]bool{}
	for _, k := range known {
		isKnown[k.Name] = true
		if t, _, ok := strings.Cut(k.Name, "."); ok {
			tables[t] = true
		}
	}
	var ps []Problem
	at := func(key, msg string) Problem {
		l, c := locate(src, key)
		return Problem{Key: key, Line: l, Col: c, Msg: msg}
	}
	unknown := func(key string) {
		msg := "unknown key"
		if s := suggest(key, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		} else {
			msg += " (every key is listed in docs/operations.md)"
		}
		ps = append(ps, at(key, msg))
	}
	// try decodes one key alone, so that a wrong type names its key and
	// does not hide the problems of the others.
	try := func(key string, doc map[string]any) bool {
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
			ps = append(ps, at(key, err.Error()))
			return false
		}
		var c Config
		if _, err := toml.Decode(buf.String(), &c); err != nil {
			msg := err.Error()
			var pe toml.ParseError
			if errors.As(err, &pe) {
				msg = pe.Message
			} else if _, m, ok := strings.Cut(msg, "): "); ok {
				msg = m
			}
			ps = append(ps, at(key, msg))
			return false
		}
		return true
	}
	for _, top := range sortedKeys(raw) {
		v := raw[top]
		if tables[top] {
			tbl, ok := v.(map[string]any)
			if !ok {
				ps = append(ps, at(top, fmt.Sprintf("want a table [%s]", top)))
				delete(raw, top)
				continue
			}
			for _, k := range sortedKeys(tbl) {
				full := top + "." + k
				switch {
				case !isKnown[full]:
					unknown(full)
					delete(tbl, k)
				case !try(full, map[string]any{top: map[string]any{k: tbl[k]}}):
					delete(tbl, k)
				}
			}
			continue
		}
		switch {
		case !isKnown[top]:
			unknown(top)
			delete(raw, top)
		case !try(top, map[string]any{top: v}):
			delete(raw, top)
		}
	}
	var buf bytes.Buffer
	var c Config
	if err := toml.NewEncoder(&buf).Encode(raw); err != nil {
		return nil, append(ps, Problem{Msg: err.Error()})
	}
	if _, err := toml.Decode(buf.String(), &c); err != nil {
		return nil, append(ps, Problem{Msg: err.Error()})
	}
	c.defaults()
	for _, p := range c.problems() {
		p.Line, p.Col = locate(src, p.Key)
		ps = append(ps, p)
	}
	// In the file's order; problems of keys the file does not set last.
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	return &c, ps
}

// CheckFiles makes the checks of the files c names that the daemon makes
// when it starts: the key files (LoadKeys at now: modes, formats, the
// credential for this gateway under the fleet roots, valid at now), the
// MQTT secrets (MQTTSecrets), and the database's directory.
func CheckFiles(c *Config, now time.Time) []Problem {
	var ps []Problem
	if _, err := LoadKeys(c.Keys, c.GatewayID, now); err != nil {
		ps = append(ps, Problem{Key: "keys", Msg: err.Error()})
	}
	if _, _, err := MQTTSecrets(c.MQTT); err != nil {
		ps = append(ps, Problem{Key: "mqtt", Msg: err.Error()})
	}
	dir := filepath.Dir(c.Database.Path)
	if st, err := os.Stat(dir); err != nil {
		ps = append(ps, Problem{Key: "database.path", Msg: fmt.Sprintf("directory %s: %v (systemd creates /var/lib/gatewayd through StateDirectory)", dir, err)})
	} else if !st.IsDir() {
		ps = append(ps, Problem{Key: "database.path", Msg: dir + " is not a directory"})
	}
	return ps
}

// MQTTSecrets reads the MQTT password file (a secret: mode 0600) and
// builds the TLS configuration from ca_file, cert_file and key_file (a
// secret). Errors name the key and the file, never a secret.
func MQTTSecrets(m MQTT) (*tls.Config, string, error) {
	var password string
	if m.PasswordFile != "" {
		b, err := ReadSecret(m.PasswordFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.password_file: %w", err)
		}
		password = string(b)
	}
	if m.CAFile == "" && m.CertFile == "" {
		return nil, password, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.CAFile != "" {
		pem, err := ReadPublic(m.CAFile, MaxCertFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("mqtt.ca_file %s: no PEM certificate in it", m.CAFile)
		}
	}
	if m.CertFile != "" {
		key, err := ReadSecret(m.KeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.key_file: %w", err)
		}
		cert, err := ReadPublic(m.CertFile, MaxCertFile)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.cert_file: %w", err)
		}
		c, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, "", fmt.Errorf("mqtt.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, password, nil
}

// Key is one configuration key and its default, as KnownKeys lists them.
type Key struct {
	// Name is the dotted key, "mqtt.brokers".
	Name string
	// Default is the value a file without the key gets, in TOML; "" when
	// there is none (the key is required or optional without a default).
	Default string
}

// KnownKeys lists every key this build knows, in the order of Config's
// fields, with the defaults Parse fills in. docs/operations.md's table is
// made from it.
func KnownKeys() []Key {
	var c Config
	c.defaults()
	var out []Key
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if fv := v.Field(i); fv.Kind() == reflect.Struct {
				walk(prefix+name+".", fv)
			} else {
				out = append(out, Key{Name: prefix + name, Default: tomlValue(fv)})
			}
		}
	}
	walk("", reflect.ValueOf(c))
	return out
}

func tomlValue(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if v.IsZero() {
		return ""
	}
	if d, ok := v.Interface().(Duration); ok {
		s := d.String() // "10m0s", "24h0m0s"
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		if d > Duration(24*time.Hour) && d%Duration(24*time.Hour) == 0 {
			s = fmt.Sprintf("%dd", time.Duration(d)/(24*time.Hour))
		}
		return fmt.Sprintf("%q", s)
	}
	switch v.Kind() {
	case reflect.String:
		return fmt.Sprintf("%q", v.String())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tomlValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprint(v.Interface())
	}
}

// suggest returns the known key an unknown one is most likely a
// misspelling of: the nearest by edit distance, if near enough, else one
// with the same last part in another table.
func suggest(key string, known []Key) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := editDistance(key, k.Name); d < bestD {
			best, bestD = k.Name, d
		}
	}
	if bestD <= max(2, len(key)/4) {
		return best
	}
	leaf := key[strings.LastIndex(key, ".")+1:]
	for _, k := range known {
		if k.Name[strings.LastIndex(k.Name, ".")+1:] == leaf {
			return k.Name
		}
	}
	return ""
}

// editDistance is Levenshtein's distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// locate finds where a dotted key is set in TOML source: the line and
// column of the key (or of its table's header, for a table), or 0, 0.
// It reads the simple form this file uses (bare keys, [table] headers).
func locate(src, key string) (line, col int) {
	table, leaf := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		table, leaf = key[:i], key[i+1:]
	}
	cur := ""
	for n, l := range strings.Split(src, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") && !strings.HasPrefix(t, "[[") {
			if end := strings.Index(t, "]"); end > 0 {
				cur = strings.TrimSpace(t[1:end])
				if table == "" && cur == leaf {
					return n + 1, strings.Index(l, "[") + 1
				}
			}
			continue
		}
		if cur != table {
			continue
		}
		if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == leaf {
			return n + 1, strings.Index(l, leaf) + 1
		}
	}
	return 0, 0
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// KeysTable is docs/operations.md's table of every key and its default,
// in Markdown.
func KeysTable() string {
	var b strings.Builder
	b.WriteString("| Key | Default |\n|---|---|\n")
	for _, k := range KnownKeys() {
		d := "none"
		if k.Default != "" {
			d = "`" + k.Default + "`"
		}
		if k.Name == "gateway_id" || k.Name == "mqtt.brokers" {
			d = "required"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", k.Name, d)
	}
	return b.String()
}

// Changed lists the keys whose values differ between a and b (both with
// their defaults filled in, as Parse returns them), in KnownKeys' order.
func Changed(a, b *Config) []string {
	va, vb := values(a), values(b)
	var out []string
	for _, k := range KnownKeys() {
		if va[k.Name] != vb[k.Name] {
			out = append(out, k.Name)
		}
	}
	return out
}

// values maps each key of c to its value in TOML.
func values(c *Config) map[string]string {
	out := map[string]string{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if fv := v.Field(i); fv.Kind() == reflect.Struct {
				walk(prefix+name+".", fv)
			} else {
				out[prefix+name] = tomlValue(fv)
			}
		}
	}
	walk("", reflect.ValueOf(*c))
	return out
}
