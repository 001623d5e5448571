// Package broker owns the gateway's MQTT session: the one connection a
// gateway keeps to the fleet's broker, its persistence (a persistent
// session, CleanSession=false, so QoS 1 commands sent while the gateway was
// away or delivered but not acknowledged are redelivered), manual
// acknowledgements released in delivery order, publishing with QoS 1 that
// reports success only after the broker's PUBACK, the retained online/offline
// status with its Last Will, automatic reconnection and Prometheus metrics.
// It knows nothing of topics' meaning or payloads: package fleet builds the
// command and result topics on top of it.
//
// It may import the standard library, paho.mqtt.golang, client_golang and
// nothing of the module except internal/ helpers.
//
// Why paho.mqtt.golang v1.5.1: it is the library the customer named; it
// speaks MQTT 3.1.1 only (this package uses nothing of MQTT 5), and since
// v1.4 it supports manual acknowledgement (SetAutoAckDisabled), which the
// journal needs: a command is acknowledged only once it is durable.
//
// # Delivery and acknowledgement
//
// paho calls the session's handler on its single incoming goroutine, which
// also processes the PUBACKs of the session's own publishes; the handler
// therefore never blocks: it copies the message into a queue, and the
// session's delivery goroutine calls Options.OnMessage with one message at a
// time, in arrival order. OnMessage must not block for long (journal the
// command, or hand it on); it may call Publish and Ack.
//
// The consumer calls Message.Ack once the message is durable (or its
// rejection notice was acknowledged by the broker). MQTT 3.1.1 §4.6 requires
// PUBACKs in the order the PUBLISHes arrived, so Ack must be called in
// delivery order. As a safety net the session holds an Ack back until every
// earlier message of the same connection was acknowledged: a message that is
// never acknowledged therefore holds back the PUBACKs of every later one,
// and all of them are redelivered after the next reconnect.
//
// The queue's bound in practice is the broker's in-flight window (mosquitto's
// max_inflight_messages, 20 by default: unacknowledged QoS 1 messages count
// against it). Options.MaxQueued is a hard cap beyond which a message is
// neither delivered nor acknowledged (the broker redelivers it after the next
// reconnect); such drops are counted in gatewayd_mqtt_messages_dropped_total.
//
// # Lifecycle
//
// Start launches the connection and returns at once: a broker that is down
// at boot does not stop the daemon; the session keeps trying and
// WaitConnected waits for it. Connection attempts are paced by the
// session (internal/backoff: at once, then 100 ms doubling to
// Options.MaxReconnectInterval, 1 s by default, jittered), and a
// successful connection resets the backoff, so the gateway is connected
// again within about a second of the broker's return however many
// outages came before; paho's own backoff, which only a long quiet spell
// reset, is switched off. Close publishes the offline status (bounded by
// Options.CloseTimeout), disconnects and waits for the session's goroutines.
package broker
