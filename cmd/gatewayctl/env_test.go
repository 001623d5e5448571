package main

import (
	"os"
	"testing"
)

// TestMain hides the developer's own connection settings (GATEWAYCTL_*
// and ~/.config/gatewayd/gatewayctl.toml) from the tests.
func TestMain(m *testing.M) {
	for _, c := range connSettingsList {
		os.Unsetenv(c.env)
	}
	dir, err := os.MkdirTemp("", "gatewayctl-test-config")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
