"""Opens many long-lived calls against a server and holds them until stdin closes.

`python -m tests.faults.flood --port P --streams 500 --imports 64 --waits 64` opens that
many StreamEvents subscribers (which never read), ImportSales streams (which never send)
and `ListSales(min_position=2^62)` waits, from one asyncio process so the callers cost
the server's process nothing. It prints `opened` when it has started them all, and one
line per call that ended (`ended <kind> <code>`), for the test to read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from ledger.v1 import audit_pb2, sales_pb2
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub

CALLS_PER_CONNECTION = 100


def _report(kind: str, call: grpc.aio.Call) -> None:
    async def ended() -> None:
        code = await call.code()
        print(f"ended {kind} {code.name}", flush=True)

    asyncio.get_running_loop().create_task(ended())


async def flood(port: int, streams: int, imports: int, waits: int, auth: str) -> None:
    metadata = (("authorization", auth),) if auth else None
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range((streams + imports + waits) // CALLS_PER_CONNECTION + 1)
    ]
    calls: list[grpc.aio.Call] = []

    def channel() -> grpc.aio.Channel:
        return channels[len(calls) % len(channels)]

    for _ in range(streams):
        feed = AuditServiceStub(channel()).StreamEvents(
            audit_pb2.StreamEventsRequest(from_position=1), metadata=metadata
        )
        _report("stream", feed)
        calls.append(feed)
    for _ in range(imports):
        upload = SalesServiceStub(channel()).ImportSales(None, metadata=metadata)  # sends nothing
        _report("import", upload)
        calls.append(upload)
    for _ in range(waits):
        wait = SalesServiceStub(channel()).ListSales(
            sales_pb2.ListSalesRequest(min_position=2**62), metadata=metadata
        )
        _report("wait", wait)
        calls.append(wait)
    print("opened", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for call in calls:
        call.cancel()
    for c in channels:
        await c.close(None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--imports", type=int, default=0)
    parser.add_argument("--waits", type=int, default=0)
    parser.add_argument("--auth", default="", help="authorization header, if keys exist")
    args = parser.parse_args()
    asyncio.run(flood(args.port, args.streams, args.imports, args.waits, args.auth))


if __name__ == "__main__":
    main()
