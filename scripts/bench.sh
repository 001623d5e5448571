#!/usr/bin/env bash
# Benchmarks, each measured in the same `go test` run as its floor. Each of
# COUNT rounds runs the benchmark and its floor back to back, and the ratio
# reported is the median of the per-round ratios: machines here are noisy,
# so only ratios measured side by side mean anything. Nothing here fails on
# time.
#
# The output is one table on stdout, a row per figure: the metric, its
# goal, the median over the rounds (a ratio, x, or an absolute figure in
# ms, MB, ns or % of a core), the range over the rounds (min-max), the
# number of rounds, and met or MISSED (info: no goal, shown for how it
# grows). Progress goes to stderr (-v: every benchmark line). -json FILE
# also writes the table as JSON: {"count": COUNT, "rows": [{"metric",
# "unit", "goal", "goal_kind" (at-most, at-least or none), "median",
# "min", "max", "rounds", "values" (per round), "met"}]}.
#
#   scripts/bench.sh                 # default: -count=6
#   scripts/bench.sh -json bench.json
#   COUNT=10 scripts/bench.sh
#   ONLY=bluez scripts/bench.sh      # only the rows whose package or names contain "bluez"
set -euo pipefail
json="" verbose=0
while (($#)); do
  case $1 in
  -json) [[ $# -ge 2 ]] || { echo "bench.sh: -json needs a FILE" >&2; exit 2; }
    json=$(realpath -m -- "$2"); shift 2 ;;
  -v) verbose=1; shift ;;
  -h | -help | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "bench.sh: unknown argument $1 (usage: scripts/bench.sh [-v] [-json FILE])" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
count=${COUNT:-6}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rows="$out/rows.tsv" # metric, unit, goal, goal kind, then one value per round
: >"$rows"

# rounds PACKAGE PATTERN LOG: COUNT runs of the benchmarks PATTERN matches,
# their result lines in LOG; once per PACKAGE and PATTERN (the rows of one
# benchmark's several metrics, or sub-benchmarks, share its runs).
rounds() {
  local pkg=$1 pattern=$2 log=$3 i
  [[ -e $log ]] && return 0
  go test -c -o "$out/bench.test" "$pkg"
  : >"$log.tmp"
  for i in $(seq "$count"); do
    echo "bench.sh: $pkg $pattern: round $i of $count" >&2
    (cd "$pkg" && "$out/bench.test" -test.run='^$' -test.bench="$pattern" -test.benchmem ${BENCHTIME:+-test.benchtime=$BENCHTIME}) |
      grep -E '^Benchmark' | if ((verbose)); then tee -a "$log.tmp" >&2; else cat >>"$log.tmp"; fi
  done
  mv "$log.tmp" "$log"
}

# row NAME UNIT GOAL KIND VALUES: one row of the table (VALUES: one per
# round, space-separated).
row() {
  local IFS=$'\t'
  echo "$*" >>"$rows"
}

# pair PACKAGE BENCH FLOOR GOAL [TIMES]: BENCH against TIMES x FLOOR (default 1)
pair() {
  local pkg=$1 bench=$2 floor=$3 goal=$4 times=${5:-1} log="$out/$(basename "$1")-pair-$2-$3.txt" label
  [[ -z ${ONLY:-} || "$pkg $bench $floor" == *"$ONLY"* ]] || return 0
  rounds "$pkg" "^Benchmark(${bench}|${floor})\$" "$log"
  label=$floor
  [[ $times == 1 ]] || label="$times x $floor"
  row "$bench / $label" x "$goal" at-most "$(awk -v b="$bench" -v f="$floor" -v times="$times" '
    $1 ~ "^Benchmark" b "-" { nb++; xb[nb] = $3 }
    $1 ~ "^Benchmark" f "-" { nf++; xf[nf] = $3 }
    END { for (i = 1; i <= nf && i <= nb; i++) printf "%g ", xb[i] / (xf[i] * times) }' "$log")"
}

# metric PACKAGE BENCH UNIT GOAL [at-least]: the median over COUNT runs of a
# figure the benchmark reports itself (b.ReportMetric): a ratio measured by
# interleaving the work and its floor in one loop (or, for fleet,
# simulating it in virtual time), or an absolute figure (a unit ending in
# -ms or -MB). The goal is a ceiling, or a floor with at-least (a
# throughput against its bound); - for none (info). BENCH may name a
# sub-benchmark (Name/sub): its top-level benchmark runs, all its
# sub-benchmarks at once.
metric() {
  local pkg=$1 bench=$2 unit=$3 goal=$4 kind=${5:-at-most} top=${2%%/*} log
  [[ -z ${ONLY:-} || "$pkg $bench" == *"$ONLY"* ]] || return 0
  [[ $goal != - ]] || kind=none
  log="$out/$(basename "$1")-$top.txt"
  rounds "$pkg" "^Benchmark${top}\$" "$log"
  row "$bench $unit" "$unit" "$goal" "$kind" "$(awk -v b="Benchmark$bench" -v u="$unit" '
    { name = $1; sub(/-[0-9]+$/, "", name) }
    name == b { for (i = 2; i <= NF; i++) if ($i == u) printf "%s ", $(i - 1) }' "$log")"
}

# table: the rows as a table on stdout and, with -json, as JSON.
table() {
  awk -F'\t' -v json="$json" -v count="$count" '
    function sort(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    }
    function fig(v, u) {
      if (u ~ /-ms$/) return sprintf("%.1f ms", v)
      if (u ~ /-MB$/) return sprintf("%.1f MB", v)
      if (u ~ /-ns\//) return sprintf("%.0f ns", v)
      if (u ~ /%core/) return sprintf("%.1f %%", v)
      return sprintf("%.2fx", v)
    }
    BEGIN { w1 = length("metric") }
    function jstr(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
    {
      r++; name[r] = $1; unit[r] = $2; goal[r] = $3; kind[r] = $4
      n = split($5, v, " "); rounds[r] = n; vals[r] = ""
      for (i = 1; i <= n; i++) vals[r] = vals[r] (i > 1 ? ", " : "") v[i]
      sort(v, n)
      med[r] = n ? ((n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) : 0
      lo[r] = v[1]; hi[r] = v[n]
      met[r] = (kind[r] == "none") ? "info" : (n == 0) ? "NO DATA" : (kind[r] == "at-least" ? med[r] >= goal[r] : med[r] <= goal[r]) ? "met" : "MISSED"
      g[r] = (kind[r] == "none") ? "-" : ((kind[r] == "at-least") ? ">= " : "<= ") fig(goal[r], unit[r])
      m[r] = n ? fig(med[r], unit[r]) : "-"
      rg[r] = n ? fig(lo[r], unit[r]) " - " fig(hi[r], unit[r]) : "-"
      if (length(name[r]) > w1) w1 = length(name[r])
    }
    END {
      fmt = "%-" w1 "s  %-11s  %10s  %-23s  %6s  %s\n"
      printf fmt, "metric", "goal", "median", "range over rounds", "rounds", "result"
      for (i = 1; i <= r; i++) printf fmt, name[i], g[i], m[i], rg[i], rounds[i], met[i]
      if (json == "") exit
      printf "{\"count\": %d, \"rows\": [", count >json
      for (i = 1; i <= r; i++) {
        printf "%s\n  {\"metric\": %s, \"unit\": %s, \"goal\": %s, \"goal_kind\": %s, \"median\": %s, \"min\": %s, \"max\": %s, \"rounds\": %d, \"values\": [%s], \"met\": %s}",
          (i > 1 ? "," : ""), jstr(name[i]), jstr(unit[i]), (kind[i] == "none" ? "null" : goal[i]), jstr(kind[i]),
          (rounds[i] ? med[i] : "null"), (rounds[i] ? lo[i] : "null"), (rounds[i] ? hi[i] : "null"), rounds[i], vals[i],
          (met[i] == "met" ? "true" : met[i] == "info" ? "null" : "false") >json
      }
      printf "\n]}\n" >json
    }' "$rows"
}

# The firmware's ratios are each measured in one loop with their floors:
# a whole handshake as gatewayd runs it (credentials by value, verified
# against the fleet root, fragmented at MTU 185) against its unavoidable
# cryptography; a frame's Seal+Open against bare AES-CCM; a signed
# command's Verify against its two Ed25519 verifications.
metric ./firmware/channel HandshakeInterleaved handshake/floor 1.3
metric ./firmware/frame SealOpen64Interleaved sealopen/ccm 1.5
metric ./firmware/command VerifyInterleaved verify/floor 1.3
# A 100 KB firmware update to the reference bootloader, timed on
# dfutest's 1M PHY link model (deterministic), against back-to-back full
# Packet writes on the same model (docs/dfu.md, Figures).
metric ./firmware/dfu/controller 'Transfer100KB/mtu247/prn12' x-bound 2.0
metric ./firmware/dfu/controller 'Transfer100KB/mtu23/prn12' x-bound 2.2
# The link cycle is a real one-command session's D-Bus work without its
# cryptography (bluez/bench_test.go BenchmarkLinkCycle); its floor is the
# session's round trips, counted on a real session against the emulator
# (TestOneCommandSessionRoundTrips fails if the floor drifts from them):
# 12 method calls (Connect, Get ServicesResolved, Get MTU, StartNotify,
# 6 WriteValue: message_1, message_3 x2, the signed unlock x2, the close
# frame; StopNotify, Disconnect) and 5 signals waited for (4
# notifications: message_2 x2, message_4, the result; and
# Connected=false after Disconnect), a one-way signal counted as half a
# round trip: 14.5. Each benchmark starts a private bus and an emulator.
# The second pair line's floor is the cycle's whole D-Bus traffic (the 12
# round trips and the 10 signals BlueZ sends meanwhile) with no logic.
# The interleaved measurement is the one the goal is judged on: the two
# pair lines run the cycle and its floors a second apart, and this
# machine's noise changes from second to second.
metric ./bluez LinkCycleInterleaved cycle/floor 1.3
# Advertisements (issue 14): the client's CPU per advertisement at 1,000
# locks (decode, dispatch, update) on a connection made by bluez.DialBus,
# as a multiple of a bare godbus connection reading the same signals from
# an identical bus, rounds of the two interleaved (bluez/adverts_test.go;
# both include the in-process emulator encoding the signals). Below 1: the
# client's own decoder costs less than godbus's. BenchmarkAdvertsGodbus is
# the same on a plain godbus connection (about 1.05x), and `go test -bench
# Adverts ./bluez/` gives 10 and 100 locks too.
metric ./bluez 'Adverts/locks=1000' cpu/floor 0.7
# How it grows (the goal is for 1,000 locks): the same ratio and the CPU
# per advertisement at 10, 100 and 1,000 locks, from the same runs.
for n in 10 100; do metric ./bluez "Adverts/locks=$n" cpu/floor -; done
for n in 10 100 1000; do metric ./bluez "Adverts/locks=$n" cpu-ns/advert -; done
# The same load on the real processes (issue 14): the gatewayd binary's
# CPU (/proc/PID/stat utime+stime over 10 s) as % of one core while
# 1,000 emulated locks advertise 10 times a second through a private
# dbus-daemon, scaled to exactly 10,000 advertisements a second (on a
# loaded machine the emulator falls a little short; its line shows
# gatewayd-%core as measured and adverts/s). It fails if gatewayd lost an
# advertisement or an event (internal/daemon/adverts_bench_test.go).
metric ./internal/daemon DockAdverts gatewayd-%core@10k/s 15
pair ./bluez LinkCycle DBusRoundTrip 1.3 14.5
pair ./bluez LinkCycle LinkCycleTraffic 1.3
pair ./bonds JournalAppend FloorUpdateFsync 1.2
# Start-up with 1,000, 10,000 and 100,000 locks and as many journal entries
# (issue 14; bonds/startup_bench_test.go), absolute figures, not ratios:
# ready-ms, the database's part of the way to READY (Open with its page
# walk and the command-ID index, then the scheduler's Pending: what the
# daemon waits for before READY=1); settled-ms, that plus the start-up
# reads the daemon runs in goroutines of their own around READY (the
# reconciler's first run, Outbox, AuditOutbox, the unproven-records
# sweep), here one after the other; ready-cpu-ms and cpu-ms, the
# process's CPU time to READY and for all of it (what the load of a shared
# machine changes least: the wall times include waiting for a core);
# rss-MB, the peak resident set of a fresh process doing all of it (VmHWM
# over its whole life), and rss-anon-MB and rss-file-MB, its anonymous
# and file-backed (binary, mapped database pages) parts at the end;
# heap-MB, its heap in use then (HeapInuse before any GC), live-MB after
# a GC. The goals are for 100,000; the smaller sizes show how each grows.
for n in 1000 10000 100000; do
  metric ./bonds "Startup/records=$n" ready-ms 300
  metric ./bonds "Startup/records=$n" ready-cpu-ms -
  metric ./bonds "Startup/records=$n" settled-ms -
  metric ./bonds "Startup/records=$n" cpu-ms -
  metric ./bonds "Startup/records=$n" rss-MB 32
done
metric ./bonds 'Startup/records=100000' heap-MB 32
metric ./bonds 'Startup/records=100000' live-MB -
metric ./bonds 'Startup/records=100000' rss-anon-MB -
metric ./bonds 'Startup/records=100000' rss-file-MB -
# The scheduler's priorities and throughput, over the link model of issue 14
# (4 session slots, connect 100 ms, exchange 30 ms) in virtual time
# (testing/synctest): no machine noise (the throughput varies by under 1%
# with the goroutines' order at one virtual instant). An unlock behind
# 600 status commands on 200 other locks against an unloaded unlock (the old
# FIFO scheduler: 146x and 153x in this model; 56x and 66x measured; its
# lines show p50 too, the goal is on p99); 1,000 commands over 200 locks
# against the bound of the slots and delays.
metric ./fleet PriorityUnlock p99/unloaded 2
metric ./fleet PriorityThroughput bound/makespan 0.97 at-least
# The whole path (issue 14): a signed unlock published to mosquitto (the
# shipped limits, set_tcp_nodelay true) until its result reaches the
# operator's client, through gatewayd, a private dbus-daemon, the BlueZ
# emulator at zero link latency and a reference lock, against its floor
# measured in the same loop: one MQTT echo, the session's ~15 D-Bus round
# trips (counted on the bus), one fdatasync and the public-key work (internal/daemon/
# e2e_bench_test.go). 300 commands per run (about 10 s); goals on p50 and p99.
metric ./internal/daemon EndToEnd p50/floor 1.3
metric ./internal/daemon EndToEnd p99/floor 1.8

table
