"""Checks recorded answers against the OpenAPI document's schemas (pipeline/tests/common/answers.rs).

Arguments: the document (JSON) and the answers (a JSON array of {method, path, status, body},
`path` being the concrete path asked, matched to the document's template as the server's
`Allow` header does: a literal segment wins over a variable one). Each body is validated, by JSON Schema 2020-12 (the
dialect of OpenAPI 3.1), against the schema the document gives for its operation and status
(or `default`). Prints one line per answer that does not conform and exits 1 if any does;
prints how many answers were checked against a typed schema (not an open object).
"""

import json
import sys

from jsonschema import Draft202012Validator

OPEN = {"type": "object", "additionalProperties": True}


def template(paths, path):
    """The document's template for a concrete path, or None."""
    segs = path.strip("/").split("/")
    best = None
    for t in paths:
        ts = t.strip("/").split("/")
        if len(ts) != len(segs):
            continue
        if all(a == b or (a.startswith("{") and b) for a, b in zip(ts, segs)):
            variables = t.count("{")
            if best is None or variables < best[0]:
                best = (variables, t)
    return best and best[1]


def main() -> int:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    with open(sys.argv[2]) as f:
        answers = json.load(f)
    failures = []
    typed = 0
    untyped = set()
    for a in answers:
        t = template(doc["paths"], a["path"])
        op = doc["paths"].get(t, {}).get(a["method"])
        where = f'{a["method"].upper()} {t or a["path"]} {a["status"]}'
        if op is None:
            failures.append(f"{where}: not in the document")
            continue
        response = op["responses"].get(str(a["status"]))
        if response is None and 200 <= a["status"] < 300:
            failures.append(f"{where}: a success the document does not list")
            continue
        response = response or op["responses"].get("default")
        if response is None:
            failures.append(f"{where}: the document lists no such status")
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            failures.append(f"{where}: the document gives no JSON schema")
            continue
        if schema != OPEN:
            typed += 1
        else:
            untyped.add(f'{a["method"].upper()} {t}')
        # The operation's schema as the root, with the components its references point into.
        root = dict(schema)
        root["components"] = doc["components"]
        for e in Draft202012Validator(root).iter_errors(a["body"]):
            path = "/".join(str(p) for p in e.absolute_path)
            failures.append(f"{where}: at /{path}: {e.message[:300]}")
    for f in failures:
        print(f)
    for u in sorted(untyped):
        print(f"untyped: {u}")
    print(f"checked {len(answers)} answers, {typed} against typed schemas, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
