package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestRunRefusesBadArguments(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no bus"},
		{[]string{"-bus", "unix:path=/nonexistent/socket", "-locks", "-1"}, "-locks -1"},
		{[]string{"-bus", "unix:path=/nonexistent/socket"}, "connecting"},
		{[]string{"-nope"}, "flag provided but not defined"},
		{[]string{"-bus", "unix:path=/nonexistent/socket", "-drop-rate", "1.5"}, "DropRate 1.5"},
		{[]string{"-bus", "unix:path=/nonexistent/socket", "-abort-rate", "-1"}, "option out of range"},
		{[]string{"-bus", "unix:path=/nonexistent/socket", "-exchange-latency", "-1s"}, "ExchangeLatency"},
	} {
		var out bytes.Buffer
		err := run(ctx, c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error with %q", c.args, err, c.want)
		}
	}
}
