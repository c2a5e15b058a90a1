#!/usr/bin/env bash
# The hot window's effect on the dataflow's held updates and the server's memory: replays a
# data directory (e.g. signalmark's batch load) with the hot window off and on (1 "day" = 1 s,
# so the 1-day window evicts the anonymous signals received more than 1 s before the log's
# latest), each with idle merging off and on, ROUNDS times, interleaved; prints replay time,
# peak and final resident memory (after SETTLE_SECS), the last arrangement-size report and
# how many signals left the dataflow. bench/RESULTS.md, "The anonymous hot window", used it.
#   bench/signalmark/hot_window.sh BIN DATA_DIR [ROUNDS]
bin=$1; data=$2; rounds=${3:-2}
export TRAILSPARK_RETENTION_DAY_SECS=1 TRAILSPARK_PERMANENT_DELETE_DAYS=100000 TRAILSPARK_RETENTION_INTERVAL_SECS=2 SETTLE_SECS=${SETTLE_SECS:-45} TRAILSPARK_ARRANGEMENT_STATS=1
port=18200
for r in $(seq 1 $rounds); do
  for cfg in "0 0" "1 0" "0 1000" "1 1000"; do
    set -- $cfg
    port=$((port+1))
    out=$(TRAILSPARK_HOT_WINDOW_DAYS=$1 TRAILSPARK_IDLE_MERGE_EFFORT=$2 "$(dirname "$0")/replay_rss.sh" "$bin" "$data" $port)
    held=$(sed "s/\x1b\[[0-9;]*m//g" /tmp/replay_$port.log | grep "Arrangement sizes" | tail -1 | grep -o "total=[0-9]*")
    ev=$(sed "s/\x1b\[[0-9;]*m//g" /tmp/replay_$port.log | grep -o "evicted=[0-9]*" | awk -F= '{s+=$2} END {print s+0}')
    echo "round=$r hot_days=$1 idle=$2 $out $held evicted=$ev"
  done
done
