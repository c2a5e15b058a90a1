"""signalmark's baseline: trailspark's outputs computed by DuckDB from the same NDJSON.

What a team would write instead of a streaming pipeline: load the events into DuckDB and
recompute everything with SQL. The outputs are the ones signalmark checks trailspark's
against, per org: unique signals (dedup by `messageId`, else by content), leads from identity
resolution (connected components of email / userId / anonymousId, found by label
propagation; a component with an email or user id is a lead, keyed by its smallest such
identifier, emails first), pending (anonymous, unattributed) and mapped signals under the
workload's mapping rules, signal-group counts, and the usage meters.

The rules are restated here in SQL for the workload's payload shapes (bench/src/workload.rs);
they follow trailspark's documented behaviour, not its code.

Two timings: one batch over all parts, and a recompute after each part is loaded (DuckDB
keeps the loaded events and recomputes every output, with the rule edit in force from the
middle part on, as signalmark applies it to trailspark).

    python3 baseline.py --dir WORK --parts 10 --out duckdb.json
"""

import argparse
import glob
import json
import os
import re
import time

import duckdb

SEGMENT_TYPES = "('identify','track','page','screen','group','alias')"


def rule_sql(edited):
    pricing_paths = "('/pricing','/demo')" if edited else "('/pricing')"
    # Priority order: the first rule that applies wins (the rules do not overlap anyway).
    return f"""CASE
      WHEN ev_event = 'form_submit' AND form_id IN ('demo','trial') THEN 1
      WHEN event_type = 'page' AND page_path IN {pricing_paths} THEN 2
      WHEN event_type = 'track' AND event_name IN ('Feature Used','Project Created') THEN 3
      WHEN source = 'marketo' AND ev_event = 'Email Clicked' THEN 4
    END"""


def normalize_path(col):
    after = f"CASE WHEN {col} LIKE '%://%' THEN regexp_extract(split_part({col}, '://', 2), '(/.*)$', 1) ELSE {col} END"
    no_query = f"regexp_replace({after}, '[?#].*$', '')"
    return f"nullif(regexp_replace(trim({no_query}, '/'), '[/-]', '_', 'g'), '')"


# Every field the outputs read, extracted from the JSON once, when an event is loaded: the
# recompute after each part then works on typed columns, as a team using DuckDB would set it
# up (re-extracting every field of every event from its JSON text on each recompute took
# over half of each recompute's time).
COLUMNS = {
    # Dedup: the message id, else the event's text (retries are byte for byte the same).
    "dkey": "coalesce('m:' || (j->>'messageId'), 'c:' || md5(CAST(j AS VARCHAR)))",
    "event_type": f"CASE WHEN j->>'type' IN {SEGMENT_TYPES} THEN j->>'type' ELSE coalesce(j->>'event', 'unknown') END",
    "event_name": "coalesce(j->>'event', j->>'name')",
    "source": f"""CASE WHEN json_exists(j, '$.mktLeadId') THEN 'marketo'
                 WHEN j->>'type' IN {SEGMENT_TYPES} THEN 'segment' ELSE 'generic' END""",
    "email": "lower(coalesce(j->>'email', j->>'$.traits.email', j->>'$.context.traits.email', j->>'$.properties.email'))",
    "user_id": "j->>'userId'",
    "anon": "j->>'anonymousId'",
    # What the rules read.
    "ev_event": "j->>'event'",
    "form_id": "j->>'$.properties.form_id'",
    "page_path": "j->>'$.context.page.path'",
    # What the signal groups read.
    "path": normalize_path("coalesce(j->>'$.properties.page_url', j->>'$.properties.url', j->>'$.context.page.path', j->>'$.context.page.url')"),
    "form": "coalesce(j->>'$.properties.form_id', j->>'$.properties.form_name')",
    "webinar": "coalesce(j->>'$.properties.webinar_name', j->>'$.properties.webinar')",
    "asset": "coalesce(j->>'$.properties.asset_name', j->>'$.properties.file_name', j->>'$.properties.asset')",
    "form_desc": "coalesce(j->>'$.properties.form_name', j->>'$.properties.form_id')",
    "title": "coalesce(j->>'$.properties.page_title', j->>'$.properties.title', j->>'$.context.page.title')",
}


def load(con, files):
    cols = ", ".join(f"{expr} AS {name}" for name, expr in COLUMNS.items())
    con.execute(
        f"""INSERT INTO ev
           SELECT org, {cols} FROM (
             SELECT CAST(regexp_extract(filename, 'signals-org([0-9]+)-part', 1) AS INTEGER) AS org, json AS j
             FROM read_json_objects(?, format = 'newline_delimited', filename = true))""",
        [files],
    )


def compute(con, edited):
    fields = ", ".join(f"any_value({c}) AS {c}" for c in COLUMNS if c != "dkey")
    con.execute(f"CREATE OR REPLACE TEMP TABLE u AS SELECT org, {fields} FROM ev GROUP BY org, dkey")
    con.execute(f"CREATE OR REPLACE TEMP TABLE s AS SELECT row_number() OVER () AS sid, *, {rule_sql(edited)} AS rule FROM u")
    # Identifiers as sortable nodes: kind digit (email 0, user id 1, anonymous id 5), value.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE si AS
           SELECT sid, org, node FROM (
             SELECT sid, org, '0:' || email AS node FROM s WHERE email IS NOT NULL
             UNION ALL SELECT sid, org, '1:' || user_id FROM s WHERE user_id IS NOT NULL
             UNION ALL SELECT sid, org, '5:' || anon FROM s WHERE anon IS NOT NULL)"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE e AS
           WITH r AS (SELECT sid, min(node) AS root FROM si GROUP BY sid),
           star AS (SELECT si.org, si.node AS x, r.root AS y FROM si JOIN r USING (sid) WHERE si.node <> r.root)
           SELECT DISTINCT org, x, y FROM (SELECT org, x, y FROM star UNION ALL SELECT org, y, x FROM star)"""
    )
    con.execute("CREATE OR REPLACE TEMP TABLE lbl AS SELECT DISTINCT org, node, node AS l FROM si")
    while True:
        changed = con.execute(
            """UPDATE lbl SET l = nb.ml FROM (
                 SELECT e.org, e.x, min(n.l) AS ml FROM e JOIN lbl n ON n.org = e.org AND n.node = e.y
                 GROUP BY e.org, e.x) nb
               WHERE lbl.org = nb.org AND lbl.node = nb.x AND nb.ml < lbl.l"""
        ).fetchone()[0]
        if changed == 0:
            break
    # A signal's lead: its component's label when that is an email or a user id.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE sl AS
           SELECT s.*, CASE WHEN l.l < '5' THEN l.l END AS lead
           FROM s LEFT JOIN (SELECT DISTINCT si.sid, lbl.l FROM si JOIN lbl USING (org, node)) l USING (sid)"""
    )
    out = {}
    per_org = con.execute(
        """SELECT org, count(*),
                  count(*) FILTER (WHERE lead IS NULL AND anon IS NOT NULL),
                  count(*) FILTER (WHERE lead IS NOT NULL AND rule IS NOT NULL),
                  count(DISTINCT lead)
           FROM sl GROUP BY org ORDER BY org"""
    ).fetchall()
    for org, unique, pending, mapped, leads in per_org:
        out[str(org)] = {
            "unique": unique,
            "pending": pending,
            "mapped": mapped,
            "usage": {"raw_signals": unique, "staged_signals": unique, "mapped_signals": mapped, "leads": leads},
        }
    kinds = {"0": "email", "1": "user_id"}
    for org, lead in con.execute("SELECT DISTINCT org, lead FROM sl WHERE lead IS NOT NULL ORDER BY 1, 2").fetchall():
        out[str(org)].setdefault("leads", []).append([kinds[lead[0]], lead[2:]])
    groups = con.execute(
        """WITH g AS (
              SELECT org, source, event_type, event_name,
                CASE WHEN event_type = 'track' AND event_name IS NOT NULL THEN event_name ELSE event_type END AS event,
                path, form, webinar, asset, form_desc, title
              -- A pending signal (anonymous, no lead yet) is in no group.
              FROM sl WHERE lead IS NOT NULL OR anon IS NULL)
            SELECT org, source, event, path, form,
              coalesce(form_desc, asset, webinar, title, CASE WHEN event_type = 'page' THEN event_name END) AS descriptor,
              CASE WHEN webinar IS NOT NULL THEN 'webinar'
                   WHEN asset IS NOT NULL OR contains(lower(event), 'download') THEN 'asset'
                   WHEN event_type IN ('page', 'screen') OR contains(lower(event), 'page_view')
                        OR contains(lower(event), 'page view') OR contains(lower(event), 'pageview') THEN 'webpage'
                   ELSE 'action' END AS content_type,
              count(*) AS n
            FROM g GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    for org, *key, n in groups:
        out[str(org)].setdefault("groups", []).append([*key, n])
    pending_anon = con.execute(
        """SELECT anon, count(*) FROM sl WHERE org = 1 AND lead IS NULL AND anon IS NOT NULL
           GROUP BY anon ORDER BY 2 DESC, 1 LIMIT 50"""
    ).fetchall()
    return out, pending_anon


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--parts", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    parts = [sorted(glob.glob(os.path.join(a.dir, f"signals-org*-part{k:02d}.ndjson"))) for k in range(a.parts)]
    edit_from = a.parts // 2

    def session():
        con = duckdb.connect()
        con.execute(f"SET threads = {a.threads}")
        cols = ", ".join(f"{c} VARCHAR" for c in COLUMNS)
        con.execute(f"CREATE TABLE ev (org INTEGER, {cols})")
        return con

    # One batch over everything (with the rules as they end: edited).
    con = session()
    t = time.perf_counter()
    load(con, [f for p in parts for f in p])
    batch_out, pending_anon = compute(con, edited=True)
    batch_s = time.perf_counter() - t
    con.close()

    # A recompute after each part.
    con = session()
    incremental = []
    for k, files in enumerate(parts):
        t = time.perf_counter()
        if files:
            load(con, files)
        inc_out, _ = compute(con, edited=k >= edit_from)
        incremental.append(time.perf_counter() - t)
    con.close()
    assert inc_out == batch_out, "the incremental recompute ends where the batch does"

    with open(a.out, "w") as f:
        json.dump(
            {
                "duckdb": duckdb.__version__,
                "batch_s": batch_s,
                "incremental_s": incremental,
                "edit_from_part": edit_from,
                "orgs": batch_out,
                "pending_anonymous_org1": pending_anon,
            },
            f,
        )


if __name__ == "__main__":
    main()
