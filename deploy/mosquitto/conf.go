package mosquitto

import (
	_ "embed"
	"fmt"
	"strings"
)

// Conf is the shipped mosquitto.conf; ACL the shipped gatewayd.acl.
var (
	//go:embed mosquitto.conf
	Conf string
	//go:embed gatewayd.acl
	ACL string
)

// Limits returns the lines of Conf that do not depend on the machine
// (no listener, TLS, authentication, paths or logging): its size,
// in-flight and queue limits, session expiry and set_tcp_nodelay.
// The demo (cmd/fleetdemo) runs its plain, anonymous broker with them,
// and the daemon's flood test too.
func Limits() []string {
	keep := []string{"max_", "queue_qos0_messages ", "persistent_client_expiration ", "set_tcp_nodelay "}
	var out []string
	for _, l := range strings.Split(Conf, "\n") {
		for _, k := range keep {
			if strings.HasPrefix(l, k) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// Site is what Configure puts into the shipped configuration for one
// broker: where it listens and its files.
type Site struct {
	Listen                    string // "PORT" or "PORT ADDRESS", e.g. "8883 127.0.0.1"
	CAFile, CertFile, KeyFile string
	ACLFile                   string
	DataDir                   string // persistence_location
	LogFile                   string // log_dest file …; "" keeps syslog
}

// Configure returns Conf with the listener, the TLS files, the ACL file,
// the persistence directory and the log destination of site; every other
// line is as shipped. It fails if Conf lacks one of those lines.
func Configure(site Site) (string, error) {
	set := map[string]string{
		"listener":             "listener " + site.Listen,
		"cafile":               "cafile " + site.CAFile,
		"certfile":             "certfile " + site.CertFile,
		"keyfile":              "keyfile " + site.KeyFile,
		"acl_file":             "acl_file " + site.ACLFile,
		"persistence_location": "persistence_location " + strings.TrimSuffix(site.DataDir, "/") + "/",
	}
	if site.LogFile != "" {
		set["log_dest"] = "log_dest file " + site.LogFile
	}
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimRight(Conf, "\n"), "\n") {
		key, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if r, ok := set[key]; ok {
			line = r
			delete(set, key)
		}
		out.WriteString(line + "\n")
	}
	if len(set) > 0 {
		return "", fmt.Errorf("mosquitto: the shipped mosquitto.conf lacks %v", set)
	}
	return out.String(), nil
}

// ACLWith returns ACL with, for each of backends, a copy of the
// "user @backend" block under that user name (each must start with "@").
func ACLWith(backends ...string) (string, error) {
	_, block, ok := strings.Cut(ACL, "user @backend\n")
	if !ok {
		return "", fmt.Errorf("mosquitto: the shipped gatewayd.acl has no user @backend block")
	}
	var b strings.Builder
	b.WriteString(ACL)
	for _, u := range backends {
		if !strings.HasPrefix(u, "@") || strings.ContainsAny(u, " \n") {
			return "", fmt.Errorf("mosquitto: backend user %q must start with @", u)
		}
		b.WriteString("\nuser " + u + "\n" + block)
	}
	return b.String(), nil
}
