#!/usr/bin/env bash
# Replays a data directory into a fresh server and reports how long until the read models
# reach the log head, and the server's resident memory (peak and after). bench/RESULTS.md,
# "Allocator and epoch cap", was measured with it.
#   bench/signalmark/replay_rss.sh BIN DATA_DIR PORT [serve options, e.g. --epoch-entries N]
# SETTLE_SECS (default 2): how long to wait after the catch-up before reading the memory
# (longer to let hot-window passes evict what the replay brought in).
set -uo pipefail
bin=$1; dir=$2; port=$3; shift 3
"$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" "$@" >"/tmp/replay_$port.log" 2>&1 &
pid=$!
t0=$(date +%s.%N)
until curl -sf "127.0.0.1:$port/healthz" 2>/dev/null | python3 -c 'import sys, json
h = json.load(sys.stdin)
sys.exit(0 if h["log_head"] > 0 and h["read_models_position"] >= h["log_head"] else 1)' 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "the server stopped; see /tmp/replay_$port.log"; exit 1; }
  sleep 0.3
done
t1=$(date +%s.%N)
sleep "${SETTLE_SECS:-2}"
echo "$(basename "$bin") $* replay_s=$(echo "$t1 - $t0" | bc) $(grep -E 'VmRSS|VmHWM' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
kill "$pid"; wait "$pid" 2>/dev/null
