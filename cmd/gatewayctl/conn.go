package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/gatewayd/gatewayd/config"
)

// connSettings are the broker connection settings send and watch take
// from flags, from GATEWAYCTL_* environment variables or from the
// configuration file, in that order of precedence.
type connSettings struct {
	Broker       string `toml:"broker"`
	CAFile       string `toml:"ca_file"`
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	ServerName   string `toml:"server_name"`
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
}

// connSetting names one setting in each of its three sources.
type connSetting struct {
	flag, env, key string
	field          func(*connSettings) *string
	path           bool // a file name: relative to the configuration file
}

var connSettingsList = []connSetting{
	{"broker", "GATEWAYCTL_BROKER", "broker", func(s *connSettings) *string { return &s.Broker }, false},
	{"ca", "GATEWAYCTL_CA", "ca_file", func(s *connSettings) *string { return &s.CAFile }, true},
	{"cert", "GATEWAYCTL_CERT", "cert_file", func(s *connSettings) *string { return &s.CertFile }, true},
	{"tlskey", "GATEWAYCTL_KEY", "key_file", func(s *connSettings) *string { return &s.KeyFile }, true},
	{"servername", "GATEWAYCTL_SERVERNAME", "server_name", func(s *connSettings) *string { return &s.ServerName }, false},
	{"username", "GATEWAYCTL_USERNAME", "username", func(s *connSettings) *string { return &s.Username }, false},
	{"password-file", "GATEWAYCTL_PASSWORD_FILE", "password_file", func(s *connSettings) *string { return &s.PasswordFile }, true},
}

// connectionHelp is the -h text of the commands that connect to the broker.
const connectionHelp = `Connection: each of -broker, -ca, -cert, -tlskey, -servername, -username
and -password-file may instead come from the environment (GATEWAYCTL_BROKER,
GATEWAYCTL_CA, GATEWAYCTL_CERT, GATEWAYCTL_KEY, GATEWAYCTL_SERVERNAME,
GATEWAYCTL_USERNAME, GATEWAYCTL_PASSWORD_FILE) or from the TOML file -config
(default $XDG_CONFIG_HOME/gatewayd/gatewayctl.toml, else
~/.config/gatewayd/gatewayctl.toml, if it exists) with the keys broker,
ca_file, cert_file, key_file, server_name, username and password_file
(relative file names are relative to it). A flag wins over the environment,
the environment over the file.
`

// defaultConfigPath is where gatewayctl looks for its configuration file
// when -config is not given; "" when there is no home to look in.
func defaultConfigPath() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "gatewayd", "gatewayctl.toml")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "gatewayd", "gatewayctl.toml")
	}
	return ""
}

// maxConnFile bounds the configuration file's size.
const maxConnFile = 64 << 10

// readConnFile reads a configuration file strictly: a TOML error or a key
// it does not know is a usage error naming the file; a file others can
// write is refused (config.ReadPublic). A missing file is no error unless
// required (given with -config).
func readConnFile(path string, required bool) (connSettings, error) {
	var s connSettings
	if path == "" {
		return s, nil
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !required {
		return s, nil
	}
	// It names the CA to trust: a file others could change is refused.
	b, err := config.ReadPublic(path, maxConnFile)
	if err != nil {
		return s, fmt.Errorf("configuration: %w", err)
	}
	md, err := toml.Decode(string(b), &s)
	if err != nil {
		return s, fmt.Errorf("configuration %s: %v: %w", path, err, errUsage)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return s, fmt.Errorf("configuration %s: unknown key(s) %s (known: broker, ca_file, cert_file, key_file, server_name, username, password_file): %w",
			path, strings.Join(keys, ", "), errUsage)
	}
	for _, c := range connSettingsList {
		if p := c.field(&s); c.path && *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return s, nil
}

// resolveConn sets every connection setting not given as a flag on fs from
// the environment, else from the configuration file (configPath, or the
// default one when empty), leaving the flag's default when neither has it.
// cur holds the flags' values and receives the result.
func resolveConn(fs *flag.FlagSet, configPath string, cur *connSettings) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	path, required := configPath, configPath != ""
	if !required {
		path = defaultConfigPath()
	}
	file, err := readConnFile(path, required)
	if err != nil {
		return err
	}
	for _, c := range connSettingsList {
		if set[c.flag] {
			continue
		}
		if v := os.Getenv(c.env); v != "" {
			*c.field(cur) = v
		} else if v := *c.field(&file); v != "" {
			*c.field(cur) = v
		}
	}
	return nil
}
