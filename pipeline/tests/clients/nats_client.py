"""Publishes signals to trailspark with the independent nats-py client.

usage: nats_client.py URL KEY ORG COUNT PREFIX

Publishes COUNT signals to JetStream on trailspark.signals.<ORG>.python (waiting for each
ack), then sends one core-NATS request to trailspark.ingest.<ORG>.python and prints the reply
as one JSON line: {"acks": [stream sequences], "reply_status": ..., "reply": {...}}.
"""
import asyncio
import json
import sys

import nats


async def main():
    url, key, org, count, prefix = sys.argv[1:6]
    nc = await nats.connect(url)
    js = nc.jetstream()
    acks = []
    for i in range(int(count)):
        body = json.dumps({"messageId": f"{prefix}-{i}", "event": "demo_request",
                           "email": f"py{i}@nats.example"}).encode()
        ack = await js.publish(f"trailspark.signals.{org}.python", body,
                               headers={"Trailspark-Api-Key": key})
        acks.append(ack.seq)
    body = json.dumps({"messageId": f"{prefix}-request", "event": "demo_request",
                       "email": "py-request@nats.example"}).encode()
    msg = await nc.request(f"trailspark.ingest.{org}.python", body, timeout=30,
                           headers={"Trailspark-Api-Key": key})
    print(json.dumps({"acks": acks,
                      "reply_status": (msg.headers or {}).get("Trailspark-Status"),
                      "reply": json.loads(msg.data)}))
    await nc.close()


asyncio.run(main())
