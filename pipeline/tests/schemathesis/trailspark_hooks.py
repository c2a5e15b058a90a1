"""Schemathesis hooks for trailspark's OpenAPI document (loaded with SCHEMATHESIS_HOOKS).

The bulk endpoint (E4) takes newline-delimited JSON, which schemathesis has no serializer
for: its generated strings are sent as they are."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return (json.dumps(value) + "\n").encode("utf-8")
