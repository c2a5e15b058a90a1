"""Median latency of a few POST /api/sql queries against servers replaying the same data
directory (signalmark's batch load), binaries alternating, two rounds each. bench/RESULTS.md,
"SQL: build only the live tables a query reads", used it.

    [ROUNDS=2] [SETTLE=20] python3 bench/signalmark/sql_latency.py DATA_DIR BIN_BEFORE BIN_AFTER
"""
import json, subprocess, sys, time, urllib.request, statistics, os
ADMIN = "signalmark-admin-token-3f9c2a7e51d04b86"
QUERIES = {
  "SELECT 1": "SELECT 1",
  "count by event type (signals)": "SELECT event_type, count(*) FROM signals GROUP BY 1",
  "anonymous_id lookup": "SELECT count(*) FROM anonymous_signals WHERE anonymous_id = 'x'",
  "count of leads (live table)": "SELECT count(*) FROM leads",
}
def req(url, tok, body=None):
    r = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r))
def run(bin, port, data):
    env = dict(os.environ, TRAILSPARK_ADMIN_TOKEN=ADMIN, TRAILSPARK_HOT_WINDOW_DAYS="0")
    p = subprocess.Popen([bin, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            h = json.load(urllib.request.urlopen(base + "/healthz"))
            if h["log_head"] > 0 and h["read_models_position"] >= h["log_head"]: break
        except Exception: pass
        time.sleep(0.3)
    time.sleep(float(os.environ.get("SETTLE", "20")))  # let idle merging settle
    tok = req(base + "/api/admin/tokens", ADMIN, {"role": "editor"})["token"]
    out = {}
    for name, q in QUERIES.items():
        ts = []
        for i in range(25):
            t = time.perf_counter(); req(base + "/api/sql", tok, {"sql": q}); ts.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(ts[5:])
    out["buffered_rows"] = json.load(urllib.request.urlopen(urllib.request.Request(base + "/api/admin/archive", headers={"Authorization": f"Bearer {ADMIN}"})))["buffered_rows"]
    p.terminate(); p.wait()
    return out
data = sys.argv[1]; bins = sys.argv[2:]
port = 18400
res = {b: [] for b in bins}
for r in range(int(os.environ.get("ROUNDS", "2"))):
    for b in bins:
        port += 1
        res[b].append(run(b, port, data))
for b in bins:
    print(b)
    for name in list(QUERIES) + ["buffered_rows"]:
        print(f"  {name}: " + ", ".join(f"{x[name]:.1f}" for x in res[b]) + " ms")
