package bonds

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test: a child process (this test binary, re-executed into
// TestCrashChild) appends journal entries from several goroutines and
// moves some of them to a terminal state and acknowledges some results,
// printing a line for each only after the call returned, that is, after
// the write is durable. The parent SIGKILLs it at a random point, reopens
// the database and checks that everything the child printed is there, and
// that the file passes every check. Fifty rounds on one file, so later
// rounds also start from a file that earlier kills left behind.

const (
	crashEnvDB    = "GATEWAYD_BONDS_CRASH_DB"
	crashEnvRound = "GATEWAYD_BONDS_CRASH_ROUND"
	crashEnvSeed  = "GATEWAYD_BONDS_CRASH_SEED" // set to replay a run
	crashRounds   = 50
	crashWriters  = 4
)

// crashID is the command ID of the child's nth write of writer w in round r.
func crashID(r, w, n int) CommandID {
	var id CommandID
	id[0] = 0xcc
	binary.BigEndian.PutUint32(id[4:], uint32(r))
	binary.BigEndian.PutUint32(id[8:], uint32(w))
	binary.BigEndian.PutUint32(id[12:], uint32(n))
	return id
}

// TestCrashChild is the child; it does nothing unless re-executed by
// TestCrashKill.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnvDB)
	if path == "" {
		t.Skip("the crash test's child process; run by TestCrashKill")
	}
	round, _ := strconv.Atoi(os.Getenv(crashEnvRound))
	db, err := Open(path, Options{Timeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	say := func(kind byte, id CommandID) {
		line := []byte(string(kind) + " " + id.String() + "\n")
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.Write(line); err != nil { // one write per line
			os.Exit(4)
		}
	}
	fail := func(what string, err error) {
		fmt.Fprintln(os.Stderr, "child:", what, err)
		os.Exit(5)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			for n := 0; n < 100000; n++ {
				id := crashID(round, w, n)
				c := Command{ID: id, LockID: lid(uint64(w + 1)), Operator: "op", Operation: "unlock", Payload: make([]byte, 200)}
				if _, err := db.Append(ctx, c); err != nil {
					fail("append", err)
				}
				say('A', id)
				if n%3 != 0 {
					continue
				}
				for _, s := range []State{StateQueued, StateRunning, StateSucceeded} {
					if _, err := db.Transition(ctx, id, s, nil); err != nil {
						fail("transition", err)
					}
				}
				say('T', id)
				if n%2 == 0 {
					if err := db.Ack(ctx, id); err != nil {
						fail("ack", err)
					}
					say('K', id)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0) // not reached in practice: the parent kills first
}

// TestCrashKill: see the comment above TestCrashChild.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashEnvSeed); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashEnvSeed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	path := filepath.Join(t.TempDir(), "crash.db")
	checkAtCleanup(t, path, schemaVersion, nil)

	type want struct{ appended, terminal, acked bool }
	all := map[CommandID]*want{}
	for round := range crashRounds {
		// Kill after a random number of printed lines, or (one round in
		// five) after a random delay, which may fall during Open.
		lines, delay := 1+rng.IntN(80), time.Duration(0)
		if rng.IntN(5) == 0 {
			lines, delay = -1, time.Duration(rng.IntN(30))*time.Millisecond
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnvDB+"="+path, crashEnvRound+"="+strconv.Itoa(round))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var timer *time.Timer
		if delay > 0 || lines < 0 {
			timer = time.AfterFunc(delay, func() { _ = cmd.Process.Kill() })
		}
		sc := bufio.NewScanner(out)
		seen := 0
		for sc.Scan() {
			kind, hexID, ok := strings.Cut(sc.Text(), " ")
			id, err := ParseCommandID(hexID)
			if !ok || err != nil || len(kind) != 1 {
				t.Fatalf("round %d: child printed %q", round, sc.Text())
			}
			w := all[id]
			if w == nil {
				w = &want{}
				all[id] = w
			}
			switch kind {
			case "A":
				w.appended = true
			case "T":
				w.terminal = true
			case "K":
				w.acked = true
			}
			if seen++; seen == lines {
				_ = cmd.Process.Kill() // SIGKILL; keep reading what it printed before
			}
		}
		if timer != nil {
			timer.Stop()
		}
		_ = cmd.Process.Kill()
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL: %s", round, err, stderr.String())
		}

		db, err := Open(path, Options{})
		if err != nil {
			if lines < 0 && os.IsNotExist(err) {
				continue
			}
			t.Fatalf("round %d (killed after %d lines, delay %v): reopen: %v", round, lines, delay, err)
		}
		for id, w := range all {
			e, err := db.Entry(bg, id)
			switch {
			case err != nil:
				t.Errorf("round %d: acknowledged entry %s lost: %v", round, id, err)
			case w.terminal && !e.State.Terminal():
				t.Errorf("round %d: %s is %s, was acknowledged as succeeded", round, id, e.State)
			case w.acked && !e.Acked():
				t.Errorf("round %d: %s lost its ack", round, id)
			}
		}
		if err := db.Check(bg); err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		out2, err := db.Outbox(bg)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out2 {
			if w := all[r.CommandID]; w != nil && w.acked {
				t.Errorf("round %d: %s acknowledged but back in the outbox", round, r.CommandID)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			t.Fatalf("round %d failed (killed after %d lines, delay %v); seed %d", round, lines, delay, seed)
		}
	}
	t.Logf("%d rounds, %d acknowledged commands, all present", crashRounds, len(all))
}
