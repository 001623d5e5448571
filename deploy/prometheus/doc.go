// Package prometheus holds what a dock's monitoring loads: the alerting
// rules for gatewayd's metrics (gatewayd-alerts.yml) and their unit tests
// (gatewayd-alerts_test.yml). It has no code; its Go tests run the real
// promtool on the rules, and internal/daemon's end-to-end test checks that
// every metric the rules name is one the daemon exports.
//
// It imports nothing of the module.
package prometheus
