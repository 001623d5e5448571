// Package mosquitto holds the broker configuration shipped for a gatewayd
// fleet (mosquitto.conf, gatewayd.acl) and the tests that run mosquitto
// with it: a gateway cannot read or publish another gateway's commands,
// nor take over its session; an oversized publish is refused by the
// broker. See docs/mqtt.md, "The broker".
package mosquitto
