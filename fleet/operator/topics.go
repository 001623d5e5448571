package operator

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// DefaultPrefix is the topic prefix when none is configured. Its last
// level is the version of this contract (docs/mqtt.md).
const DefaultPrefix = "gatewayd/v1"

// MaxGatewayIDLen and maxPrefixLen bound the two variable parts of a topic.
const (
	MaxGatewayIDLen = 64
	maxPrefixLen    = 128
)

// Topics are one gateway's MQTT topics:
// P/gw/G/{cmd,result,rejected,status,locks,events} for prefix P and gateway ID G. Every topic of a gateway is below
// P/gw/G/, so one broker ACL pattern per gateway covers them.
type Topics struct {
	// Prefix and GatewayID are what the topics were built from.
	Prefix, GatewayID string
	// Cmd is subscribed (QoS 1): signed commands in.
	Cmd string
	// Result is published (QoS 1, not retained): one result per journaled
	// command.
	Result string
	// Rejected is published (QoS 1, not retained): notices for input
	// refused before it was journaled.
	Rejected string
	// Status is published retained by the broker session (and as its
	// will): the gateway's online/offline status.
	Status string
	// Locks is published (QoS 1, retained) by a [Presence]: the locks the
	// gateway hears.
	Locks string
	// Revocations is subscribed (QoS 1): the fleet's revocation list,
	// retained, published by the fleet (gatewayctl revoke), the same for
	// every gateway: P/fleet/revocations, the one topic not below
	// P/gw/G/.
	Revocations string
	// Events is published (QoS 1, not retained) by an [AuditPublisher]:
	// the entries of the locks' audit logs, as the gateway reads them.
	Events string
}

// NewTopics returns the topics of gateway gatewayID under prefix (""
// means DefaultPrefix). The gateway ID is the subject of the gateway's
// credential and must match [A-Za-z0-9._-]{1,64}; the prefix must be 1..128
// bytes of non-empty levels without wildcards, NUL or a leading '$'.
// Errors wrap ErrInvalidTopic.
func NewTopics(prefix, gatewayID string) (Topics, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := ValidGatewayID(gatewayID); err != nil {
		return Topics{}, err
	}
	if err := validPrefix(prefix); err != nil {
		return Topics{}, err
	}
	base := prefix + "/gw/" + gatewayID + "/"
	return Topics{
		Prefix: prefix, GatewayID: gatewayID,
		Cmd: base + "cmd", Result: base + "result", Rejected: base + "rejected", Status: base + "status",
		Locks: base + "locks", Events: base + "events", Revocations: prefix + "/fleet/revocations",
	}, nil
}

// RevocationsTopic returns the fleet's revocations topic under prefix (""
// means DefaultPrefix): P/fleet/revocations, the same for every gateway.
// Errors wrap ErrInvalidTopic.
func RevocationsTopic(prefix string) (string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validPrefix(prefix); err != nil {
		return "", err
	}
	return prefix + "/fleet/revocations", nil
}

// ValidGatewayID reports, as an error wrapping ErrInvalidTopic, whether id
// is not a valid gateway ID: 1..64 bytes of [A-Za-z0-9._-].
func ValidGatewayID(id string) error {
	if len(id) == 0 || len(id) > MaxGatewayIDLen {
		return fmt.Errorf("%w: gateway ID of %d bytes, want 1..%d", ErrInvalidTopic, len(id), MaxGatewayIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: gateway ID %q: byte %d is not one of [A-Za-z0-9._-]", ErrInvalidTopic, id, i)
		}
	}
	return nil
}

func validPrefix(p string) error {
	switch {
	case len(p) > maxPrefixLen:
		return fmt.Errorf("%w: prefix of %d bytes, limit %d", ErrInvalidTopic, len(p), maxPrefixLen)
	case strings.HasPrefix(p, "$"):
		return fmt.Errorf("%w: prefix %q starts with '$' (reserved by brokers)", ErrInvalidTopic, p)
	case !utf8.ValidString(p) || strings.ContainsAny(p, "+#\x00"):
		return fmt.Errorf("%w: prefix %q has a wildcard, a NUL or invalid UTF-8", ErrInvalidTopic, p)
	}
	for _, level := range strings.Split(p, "/") {
		if level == "" {
			return fmt.Errorf("%w: prefix %q has an empty level", ErrInvalidTopic, p)
		}
	}
	return nil
}
