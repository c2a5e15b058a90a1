"""Independent readers for what trailspark writes: pyarrow and DuckDB over the archive's
Parquet files, pyarrow over SQL answers in Arrow IPC and Parquet, boto3 against an S3 server.

Usage:
  parquet_read.py archive DIR          -> {"signals": [...], "anonymous": [...], "duckdb": {...}, "files": [...]}
  parquet_read.py ipc FILE             -> {"columns": [...], "rows": [[...], ...]}
  parquet_read.py parquet FILE         -> same
  parquet_read.py s3 ENDPOINT mkbucket BUCKET
  parquet_read.py s3 ENDPOINT list BUCKET PREFIX   -> [keys]
  parquet_read.py s3 ENDPOINT put BUCKET KEY FILE
Prints one JSON document on stdout.
"""

import glob
import json
import os
import sys


def table_json(t):
    cols = t.column_names
    rows = [[r[c] for c in cols] for r in t.to_pylist()]
    return {"columns": cols, "rows": rows}


def archive(root):
    import duckdb
    import pyarrow.dataset as ds

    out = {"files": sorted(os.path.relpath(p, root) for p in glob.glob(f"{root}/**/*", recursive=True) if os.path.isfile(p))}
    for tree, name in (("signals", "signals"), ("anonymous", "anonymous")):
        path = os.path.join(root, tree)
        if not os.path.isdir(path) or not glob.glob(f"{path}/**/*.parquet", recursive=True):
            out[name] = []
            continue
        d = ds.dataset(path, format="parquet", partitioning="hive")
        out[name] = d.to_table().to_pylist()
    sig = os.path.join(root, "signals", "**", "*.parquet")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT org_id, count(*), count(DISTINCT id) FROM read_parquet('{sig}', hive_partitioning=true) GROUP BY org_id ORDER BY org_id"
    ).fetchall()
    out["duckdb"] = {str(org): {"rows": n, "distinct_ids": d} for org, n, d in rows}
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "archive":
        res = archive(sys.argv[2])
    elif cmd == "ipc":
        import pyarrow.ipc as ipc

        with open(sys.argv[2], "rb") as f:
            res = table_json(ipc.open_stream(f).read_all())
    elif cmd == "parquet":
        import pyarrow.parquet as pq

        res = table_json(pq.read_table(sys.argv[2]))
    elif cmd == "s3":
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=sys.argv[2],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        if sys.argv[3] == "mkbucket":
            s3.create_bucket(Bucket=sys.argv[4])
            res = {"created": sys.argv[4]}
        elif sys.argv[3] == "put":
            s3.upload_file(sys.argv[6], sys.argv[4], sys.argv[5])
            res = {"put": sys.argv[5]}
        else:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[4], Prefix=sys.argv[5])
            res = [o["Key"] for p in pages for o in p.get("Contents", [])]
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
