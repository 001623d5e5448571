// Package grafana holds the Grafana dashboard for a fleet of gatewayd
// docks (gatewayd-fleet.json): commands and results by operation, command
// latency, locks in range, bonds, adapter resets, MQTT state and queue
// depth, for one gateway or all of them. It has no code; its Go tests
// load the dashboard strictly with the Grafana dashboard schema (the
// Grafana Foundation SDK's types, generated from Grafana's own schema),
// check its layout and variables, and have promtool parse every query;
// internal/daemon's end-to-end test checks that every metric the queries
// name is one the daemon exports.
//
// It imports nothing of the module.
package grafana
