package mosquitto

import (
	_ "embed"
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
