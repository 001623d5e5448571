package operator

import (
	"context"
	"time"

	"github.com/gatewayd/gatewayd/bonds"
)

// Journal is what this package needs of the gateway's database; *bonds.DB
// satisfies it.
type Journal interface {
	// AppendBatch journals commands, each with the time it arrived (the
	// journal is ordered by it), in one transaction: all of them durable
	// or none. It returns only once they are durable; per command, the
	// new entry, or the existing one with bonds.ErrDuplicate, or
	// bonds.ErrInvalid. The error is for the whole batch (nothing
	// journaled). See bonds.DB.AppendBatch.
	AppendBatch(ctx context.Context, cs []bonds.Arrival) ([]bonds.Entry, []error, error)
	Transition(ctx context.Context, id bonds.CommandID, to bonds.State, mutate func(*bonds.Entry)) (bonds.Entry, error)
	Entry(ctx context.Context, id bonds.CommandID) (bonds.Entry, error)
	Outbox(ctx context.Context) ([]bonds.Result, error)
	Ack(ctx context.Context, id bonds.CommandID) error
	Lock(ctx context.Context, id bonds.LockID) (bonds.Lock, error)
}

// Publisher publishes to the broker with QoS 1. Publish returns nil only
// after the broker acknowledged the message (PUBACK); on any other outcome
// (ctx done, connection lost, broker refused) it returns an error and the
// message may or may not have reached the broker.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
}

// Message is one message received on the command topic, as the daemon
// adapts it from the broker session.
type Message struct {
	// Payload is the message's payload; it is not modified or retained
	// beyond the journal's copy.
	Payload []byte
	// Duplicate is MQTT's DUP flag: the broker may have delivered it
	// before. Informational; the journal deduplicates by command ID.
	Duplicate bool
	// ReceivedAt is when the session received it (zero: when enqueued).
	ReceivedAt time.Time
	// Ack acknowledges the message to the broker (PUBACK). The Intake
	// calls it at most once, only when the message's outcome is durable
	// (journaled, duplicate, or its rejection notice acknowledged by the
	// broker), and in the order the messages were enqueued. It must not
	// block. Nil for QoS 0.
	Ack func()
}
