"""Sends identify, track, page and group calls through a real analytics SDK.

Usage: sdk_send.py segment|rudderstack HOST WRITE_KEY RUN_ID

Both SDKs post to HOST/v1/batch with the write key as the Basic-auth username; RudderStack's
also gzips the body. Any delivery error makes the script exit non-zero.
"""
import sys

kind, host, write_key, run_id = sys.argv[1:5]
errors = []


def on_error(error, items):
    errors.append(f"{error!r} for {len(items)} items")


if kind == "segment":
    from segment.analytics import Client

    client = Client(write_key, host=host, on_error=on_error, sync_mode=True, max_retries=1)
else:
    from rudderstack.analytics import Client

    client = Client(write_key, host=host, on_error=on_error, sync_mode=True, max_retries=1, gzip=True)

uid = f"user-{run_id}"
client.identify(uid, {"email": f"Person-{run_id}@Example.com", "name": "Ana"}, anonymous_id=f"anon-{run_id}")
client.track(uid, "Signed Up", {"plan": "pro", "run": run_id})
client.page(uid, category="Docs", name="Pricing", properties={"url": "https://example.com/pricing"})
client.group(uid, f"ws-{run_id}", {"name": "Acme", "mrr": 49900})
client.flush()

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("sent")
