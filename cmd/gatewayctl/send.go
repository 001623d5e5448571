package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/gatewayd/gatewayd/bonds"
	"github.com/gatewayd/gatewayd/config"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/cred"
	"github.com/gatewayd/gatewayd/fleet/operator"
)

// nextCounter returns a counter above every earlier one of this key: the
// time in microseconds, or the last counter plus one if the clock went
// back. The last value is kept beside the key (KEY.counter), under an
// exclusive lock, so two gatewayctl runs never share a counter.
func nextCounter(keyPath string, now time.Time) (uint64, error) {
	f, err := os.OpenFile(keyPath+".counter", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	last, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	c := uint64(now.UnixMicro())
	if c <= last {
		c = last + 1
	}
	if c > command.MaxCounter {
		return 0, fmt.Errorf("counter %d above the protocol's maximum", c)
	}
	if _, err := f.WriteAt([]byte(strconv.FormatUint(c, 10)+"\n"), 0); err != nil {
		return 0, err
	}
	return c, f.Sync()
}

// signFlags are the flags sign and send share.
type signFlags struct {
	key, cred, lock *string
	valid           *time.Duration
}

func addSignFlags(fs interface {
	String(string, string, string) *string
	Duration(string, time.Duration, string) *time.Duration
}) signFlags {
	return signFlags{
		key:   fs.String("key", "", "the operator's private key (PEM, mode 0600)"),
		cred:  fs.String("cred", "", "the operator's credential (CWT)"),
		lock:  fs.String("lock", "", "the lock's ID (16 hex digits)"),
		valid: fs.Duration("valid", 10*time.Minute, "how long the command stays valid (its not-after)"),
	}
}

// build signs the command the arguments describe.
func (sf signFlags) build(args []string, now time.Time) (command.Body, []byte, error) {
	var b command.Body
	if *sf.key == "" || *sf.cred == "" || *sf.lock == "" || len(args) == 0 {
		return b, nil, fmt.Errorf("-key, -cred, -lock and an operation are required: %w", errUsage)
	}
	id, err := bonds.ParseLockID(*sf.lock)
	if err != nil {
		return b, nil, fmt.Errorf("-lock: %v: %w", err, errUsage)
	}
	op, ok := command.ParseOp(args[0])
	if !ok || op == command.OpAllowBond {
		return b, nil, fmt.Errorf("operation %q: want lock, unlock, status, add-user, remove-user, list-users, clear-bonds or read-audit: %w", args[0], errUsage)
	}
	b = command.Body{LockID: id, Op: op, NotAfter: now.Add(*sf.valid).Truncate(time.Second)}
	rest := args[1:]
	switch op {
	case command.OpAddUser:
		if len(rest) < 2 || len(rest) > 3 {
			return b, nil, fmt.Errorf("add-user USER_ID USER.pub [NOT_AFTER RFC 3339]: %w", errUsage)
		}
		pub, err := config.ReadPublicKey(rest[1])
		if err != nil {
			return b, nil, err
		}
		b.Args = command.Args{UserID: rest[0], PublicKey: pub, Role: cred.RoleRider, NotAfter: now.Add(365 * 24 * time.Hour).Truncate(time.Second)}
		if len(rest) == 3 {
			t, err := time.Parse(time.RFC3339, rest[2])
			if err != nil {
				return b, nil, fmt.Errorf("NOT_AFTER %q: %v: %w", rest[2], err, errUsage)
			}
			b.Args.NotAfter = t
		}
	case command.OpRemoveUser:
		if len(rest) != 1 {
			return b, nil, fmt.Errorf("remove-user USER_ID: %w", errUsage)
		}
		b.Args = command.Args{UserID: rest[0]}
	case command.OpReadAudit:
		b.Args = command.Args{FromSeq: 0, Max: 16}
	default:
		if len(rest) != 0 {
			return b, nil, fmt.Errorf("%v takes no arguments: %w", op, errUsage)
		}
	}
	if _, err := rand.Read(b.CommandID[:]); err != nil {
		return b, nil, err
	}
	key, err := config.ReadPrivateKey(*sf.key)
	if err != nil {
		return b, nil, err
	}
	cwt, err := os.ReadFile(*sf.cred)
	if err != nil {
		return b, nil, err
	}
	if b.Counter, err = nextCounter(*sf.key, now); err != nil {
		return b, nil, fmt.Errorf("counter: %w", err)
	}
	signed, err := command.Sign(key, cwt, b)
	if err != nil {
		return b, nil, err
	}
	return b, signed, nil
}

func sign(args []string, stdout, stderr io.Writer) error {
	fs := flags("sign")
	sf := addSignFlags(fs)
	out := fs.String("o", "", "write the signed command here (default: stdout, hex)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	b, signed, err := sf.build(fs.Args(), time.Now())
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if *out != "" {
		if err := config.WriteFile(*out, signed, 0o600); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		fmt.Fprintf(stderr, "command %x (%v) written to %s\n", b.CommandID, b.Op, *out)
		return nil
	}
	fmt.Fprintln(stdout, hex.EncodeToString(signed))
	return nil
}

// mqttFlags are the flags send and watch share.
type mqttFlags struct {
	connFlags
	gateway, prefix *string
}

func addMQTTFlags(fs *flag.FlagSet) mqttFlags {
	return mqttFlags{
		connFlags: addConnFlags(fs, "tcp://127.0.0.1:1883"),
		gateway:   fs.String("gateway", "", "the gateway's ID (send: by default the gateway that hears -lock, from the gateways' retained lock presence)"),
		prefix:    fs.String("prefix", operator.DefaultPrefix, "topic prefix"),
	}
}

// connFlags are the broker connection flags. The settings may also come
// from the environment or the configuration file (resolveConn,
// connectionHelp).
type connFlags struct {
	fs     *flag.FlagSet
	config *string
	conn   *connSettings
}

func addConnFlags(fs *flag.FlagSet, broker string) connFlags {
	cf := connFlags{fs: fs, conn: &connSettings{}}
	fs.StringVar(&cf.conn.Broker, "broker", broker, "MQTT broker URL (env GATEWAYCTL_BROKER)")
	cf.config = fs.String("config", "", "configuration file with the connection settings (default: $XDG_CONFIG_HOME/gatewayd/gatewayctl.toml or ~/.config/gatewayd/gatewayctl.toml, if it exists)")
	fs.StringVar(&cf.conn.CAFile, "ca", "", "CA certificate (PEM) to verify an ssl:// broker with (default: the system's; env GATEWAYCTL_CA)")
	fs.StringVar(&cf.conn.CertFile, "cert", "", "client certificate (PEM) for the broker, with -tlskey (deploy/mosquitto; env GATEWAYCTL_CERT)")
	fs.StringVar(&cf.conn.KeyFile, "tlskey", "", "the client certificate's private key (PEM, mode 0600; env GATEWAYCTL_KEY)")
	fs.StringVar(&cf.conn.ServerName, "servername", "", "the name to verify the broker's certificate for (default: the broker URL's host; env GATEWAYCTL_SERVERNAME)")
	fs.StringVar(&cf.conn.Username, "username", "", "MQTT username (env GATEWAYCTL_USERNAME)")
	fs.StringVar(&cf.conn.PasswordFile, "password-file", "", "file holding the MQTT password (mode 0600), with -username (env GATEWAYCTL_PASSWORD_FILE)")
	return cf
}

// tlsConfig is the TLS configuration the settings ask for, nil for none.
func (cs connSettings) tlsConfig() (*tls.Config, error) {
	if cs.CAFile == "" && cs.CertFile == "" && cs.KeyFile == "" && cs.ServerName == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cs.ServerName}
	if cs.CAFile != "" {
		pem, err := os.ReadFile(cs.CAFile)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate in it: %w", cs.CAFile, errUsage)
		}
	}
	if (cs.CertFile == "") != (cs.KeyFile == "") {
		return nil, fmt.Errorf("-cert and -tlskey go together: %w", errUsage)
	}
	if cs.CertFile != "" {
		if _, err := config.ReadSecret(cs.KeyFile); err != nil {
			return nil, fmt.Errorf("-tlskey: %w", err)
		}
		c, err := tls.LoadX509KeyPair(cs.CertFile, cs.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("-cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// options are paho's client options for the settings, resolved from the
// flags, the environment and the configuration file.
func (cf connFlags) options() (*mqtt.ClientOptions, error) {
	if err := resolveConn(cf.fs, *cf.config, cf.conn); err != nil {
		return nil, err
	}
	cs := *cf.conn
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	o := mqtt.NewClientOptions().AddBroker(cs.Broker).SetClientID("gatewayctl-" + hex.EncodeToString(rnd[:])).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	tc, err := cs.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	if cs.PasswordFile != "" && cs.Username == "" {
		return nil, fmt.Errorf("-password-file needs -username: %w", errUsage)
	}
	o.SetUsername(cs.Username)
	if cs.PasswordFile != "" {
		pw, err := config.ReadSecret(cs.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("-password-file: %w", err)
		}
		o.SetPassword(string(pw))
	}
	return o, nil
}

func (mf mqttFlags) connect(ctx context.Context) (mqtt.Client, operator.Topics, error) {
	t, err := operator.NewTopics(*mf.prefix, *mf.gateway)
	if err != nil {
		return nil, t, fmt.Errorf("%v: %w", err, errUsage)
	}
	o, err := mf.options()
	if err != nil {
		return nil, t, err
	}
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		return nil, t, fmt.Errorf("connect to %s: %w", mf.conn.Broker, err)
	}
	return c, t, nil
}

// connectFor is connect for send: without -gateway, the gateway is the
// one that hears lock, from the gateways' retained lock presence
// (findGateway), told on w.
func (mf mqttFlags) connectFor(ctx context.Context, lock bonds.LockID, haveLock bool, quiet time.Duration, w io.Writer) (mqtt.Client, operator.Topics, error) {
	if *mf.gateway != "" {
		return mf.connect(ctx)
	}
	if !haveLock {
		return nil, operator.Topics{}, fmt.Errorf("-gateway is required for a payload that names no lock: %w", errUsage)
	}
	o, err := mf.options()
	if err != nil {
		return nil, operator.Topics{}, err
	}
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		return nil, operator.Topics{}, fmt.Errorf("connect to %s: %w", mf.conn.Broker, err)
	}
	gw, err := findGateway(ctx, c, *mf.prefix, lock, quiet, w)
	if err == nil {
		var t operator.Topics
		if t, err = operator.NewTopics(*mf.prefix, gw); err == nil {
			return c, t, nil
		}
	}
	c.Disconnect(250)
	return nil, operator.Topics{}, err
}

func wait(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func send(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("send")
	sf := addSignFlags(fs)
	mf := addMQTTFlags(fs)
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the result")
	findWait := fs.Duration("find-wait", DefaultFindWait, "without -gateway: how long to wait for more of the gateways' retained lock presence before choosing one")
	raw := fs.String("payload", "", "send this file's bytes as the command instead of signing one (for tests of the gateway's refusals)")
	var rf rootFlags
	fs.Var(&rf, "root", "a fleet root public key (PEM), to verify the lock's signature of the result; repeatable")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	roots, err := rf.roots()
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var (
		signed   []byte
		cmdID    string
		lockID   bonds.LockID
		haveLock bool
		vo       = operator.VerifyOptions{Roots: roots}
	)
	if *raw != "" {
		if signed, err = os.ReadFile(*raw); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		// Match its result by the command ID it claims, if it has one;
		// refusals are matched by the payload's digest either way.
		if b, err := command.Peek(signed); err == nil {
			lockID, haveLock = bonds.LockID(b.LockID), true
			cmdID = hex.EncodeToString(b.CommandID[:])
			vo.CommandID, vo.Operation = bonds.CommandID(b.CommandID), b.Op.String()
		}
	} else {
		var b command.Body
		if b, signed, err = sf.build(fs.Args(), time.Now()); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		lockID, haveLock = bonds.LockID(b.LockID), true
		cmdID = hex.EncodeToString(b.CommandID[:])
		vo.CommandID, vo.Operation, vo.Counter = bonds.CommandID(b.CommandID), b.Op.String(), b.Counter
	}
	sum := sha256.Sum256(signed)
	digest := hex.EncodeToString(sum[:])
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, t, err := mf.connectFor(ctx, lockID, haveLock, *findWait, stderr)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer c.Disconnect(250)

	got := make(chan []byte, 1)
	match := func(_ mqtt.Client, m mqtt.Message) {
		var probe struct {
			CommandID     string `json:"command_id"`
			PayloadSHA256 string `json:"payload_sha256"`
		}
		if json.Unmarshal(m.Payload(), &probe) != nil {
			return
		}
		if (cmdID != "" && probe.CommandID == cmdID && m.Topic() == t.Result) || probe.PayloadSHA256 == digest {
			select {
			case got <- append([]byte(m.Topic()+" "), m.Payload()...):
			default:
			}
		}
	}
	if err := wait(ctx, c.SubscribeMultiple(map[string]byte{t.Result: 1, t.Rejected: 1}, match)); err != nil {
		return fmt.Errorf("send: subscribe: %w", err)
	}
	if err := wait(ctx, c.Publish(t.Cmd, 1, false, signed)); err != nil {
		return fmt.Errorf("send: publish: %w", err)
	}
	if cmdID != "" {
		fmt.Fprintf(stderr, "sent command %s to %s; waiting for its result\n", cmdID, t.Cmd)
	}
	select {
	case m := <-got:
		topic, body, _ := bytes.Cut(m, []byte(" "))
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, body, "", "  ")
		fmt.Fprintln(stdout, pretty.String())
		if string(topic) == t.Rejected {
			return fmt.Errorf("refused by the gateway: %w", errNotOK)
		}
		var r operator.ResultMessage
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("send: result: %w", err)
		}
		line, verr := verdict(body, vo)
		fmt.Fprintln(stderr, line)
		if r.State != bonds.StateSucceeded {
			return fmt.Errorf("%s: %w", r.State, errNotOK)
		}
		if verr != nil && roots != nil {
			return fmt.Errorf("succeeded by the gateway's word only: %w", errUnverified)
		}
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && cmdID != "" {
			return fmt.Errorf("send: no result for command %s within %v; the broker has it, and the gateway reports its result once it runs: gatewayctl watch", cmdID, *timeout)
		}
		return fmt.Errorf("send: %w", ctx.Err())
	}
}

func watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("watch")
	mf := addMQTTFlags(fs)
	n := fs.Int("n", 0, "exit after this many messages (0: until interrupted)")
	var rf rootFlags
	fs.Var(&rf, "root", "a fleet root public key (PEM), to verify the lock's signature of each result; repeatable")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	roots, err := rf.roots()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	c, t, err := mf.connect(ctx)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer c.Disconnect(250)
	msgs := make(chan string, 64)
	h := func(_ mqtt.Client, m mqtt.Message) {
		s := fmt.Sprintf("%s %s", m.Topic(), m.Payload())
		if m.Topic() == t.Result && roots != nil {
			line, _ := verdict(m.Payload(), operator.VerifyOptions{Roots: roots})
			s += "\n  " + line
		}
		select {
		case msgs <- s:
		default:
		}
	}
	if err := wait(ctx, c.SubscribeMultiple(map[string]byte{t.Result: 1, t.Rejected: 1, t.Status: 1, t.Events: 1}, h)); err != nil {
		return fmt.Errorf("watch: subscribe: %w", err)
	}
	for i := 0; *n == 0 || i < *n; i++ {
		select {
		case m := <-msgs:
			fmt.Fprintln(stdout, m)
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}
