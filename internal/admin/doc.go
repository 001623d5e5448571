// Package admin owns gatewayd's local admin socket: a Unix socket (mode
// 0600, in a 0700 runtime directory) that serves HTTP to root and to the
// daemon's own user only (SO_PEERCRED), for what must reach a running
// daemon: an online, consistent database backup (`gatewayd db backup`
// while gatewayd runs) and a status snapshot. It is not a network API and
// never listens on TCP.
//
// It may import the standard library and bonds/ (for the backup stream and
// its check); nothing else of the module.
package admin
