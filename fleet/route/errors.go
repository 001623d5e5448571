package route

import "errors"

var (
	// ErrNoRoute is returned when no online gateway's presence shows the
	// lock.
	ErrNoRoute = errors.New("route: no online gateway hears the lock")
	// ErrTopic is returned when a message's topic is not a gateway's
	// status or locks topic under the table's prefix.
	ErrTopic = errors.New("route: not a status or locks topic")
	// ErrPayload is returned when a status or presence message does not
	// parse, or names another gateway than its topic.
	ErrPayload = errors.New("route: malformed message")
)
