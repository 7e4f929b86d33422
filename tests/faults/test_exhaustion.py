"""Long-lived calls never starve unary calls.

With 500 unread StreamEvents subscribers, 64 import streams that send nothing and 64
parked `min_position` waits open at once (the default caps for one merchant, opened by
another process), Health/Check and GetSale keep a p99 under 100 ms, and one call more of
each kind answers RESOURCE_EXHAUSTED with the cap it hit.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledger.application import Ledger
from ledger.audit.events import AuditLog
from ledger.bootstrap import build_server, build_views
from ledger.grpc.resources import VIEWS_SCAN_SECONDS
from ledger.grpc.server import LedgerServer
from ledger.limits import Limits
from ledger.store import Settings
from ledger.v1 import audit_pb2 as audit_pb
from ledger.v1 import sales_pb2 as pb
from ledger.v1.audit_pb2_grpc import AuditServiceStub
from ledger.v1.sales_pb2_grpc import SalesServiceStub
from projections.queries import ReadModels
from projections.runner import Projections
from tests.e2e import api_client as api

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

STREAMS, IMPORTS, WAITS = 500, 64, 64
PROBES = 300  # sequential calls of each kind measured while the flood is open
P99_LIMIT_MS = 100.0
OPEN_WITHIN = 45.0
QUIET_SECONDS = 6.0  # longer than a subscriber's recheck (5 s)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The server's default pool: 500 subscribers each read the log once as they open.
    return dataclasses.replace(settings, pool_size=10)


@pytest.fixture
def server(ledger: Ledger) -> Iterator[LedgerServer]:
    views = build_views(ledger)
    views.ensure()
    # Waits stay parked for the whole test instead of timing out after the default 5 s.
    reads = ReadModels(views, require_runner=True, wait_seconds=90)
    with views.running():
        server = build_server(ledger, "127.0.0.1:0", reads=reads)
        server.start()
        yield server
        server.stop(1.0)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def timed(call: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def wait_until(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.1)


def read_lines(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.strip())


class Counted:
    """Counts the calls of a method (patched on its class, so the server's calls count)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def test_unary_calls_stay_fast_while_every_long_lived_slot_is_taken(
    server: LedgerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_reads = Counted(monkeypatch, AuditLog, "feed")
    view_reads = Counted(monkeypatch, Projections, "positions")
    limits = Limits()
    assert (limits.streams_per_merchant, limits.imports_per_merchant) == (STREAMS, IMPORTS)
    assert limits.waits_per_merchant == WAITS
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    sales = SalesServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    sale_id = api.create_sale(sales).id
    api.add_line_item(sales, sale_id)
    # The same probes with nothing open, for comparison on a machine that may be busy.
    idle_checks = timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5), PROBES)
    idle_reads = timed(lambda: api.get_sale(sales, sale_id), PROBES)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    threads_before = process.num_threads()

    flood = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults.flood",
            f"--port={server.port}",
            f"--streams={STREAMS}",
            f"--imports={IMPORTS}",
            f"--waits={WAITS}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(flood.stdout, lines), daemon=True)
    reader.start()
    try:
        resources = server.resources
        wait_until(
            lambda: (
                (
                    resources.streams.in_use,
                    resources.imports.in_use,
                    resources.waits.in_use,
                )
                == (STREAMS, IMPORTS, WAITS)
            ),
            OPEN_WITHIN,
            f"all calls open ({resources.streams.in_use} streams, "
            f"{resources.imports.in_use} imports, {resources.waits.in_use} waits; "
            f"flood said {lines[-3:]})",
        )
        rss_open = process.memory_info().rss
        threads_open = process.num_threads()
        # Parked calls read nothing each: a subscriber reads the log once as it opens, then
        # not at all (no new events); the waits read through the one watch of the views.
        wait_until(lambda: feed_reads.calls >= STREAMS, OPEN_WITHIN, "every first read")
        feeds_before, views_before = feed_reads.calls, view_reads.calls
        cpu_before = sum(process.cpu_times()[:2])
        time.sleep(QUIET_SECONDS)
        cpu_quiet = (sum(process.cpu_times()[:2]) - cpu_before) / QUIET_SECONDS
        feeds_quiet = feed_reads.calls - feeds_before
        views_quiet = view_reads.calls - views_before

        checks = timed(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5), PROBES)
        reads = timed(lambda: api.get_sale(sales, sale_id), PROBES)

        # One more of each kind is refused with the cap it hit (here the merchant's).
        feed = AuditServiceStub(channel).StreamEvents(
            audit_pb.StreamEventsRequest(from_position=1), timeout=10
        )
        refused_feed = api.expect_failure(lambda: next(iter(feed)))
        refused_import = api.expect_failure(
            lambda: sales.ImportSales(iter([pb.ImportSalesRequest()]), timeout=10)
        )
        refused_wait = api.expect_failure(
            lambda: sales.ListSales(pb.ListSalesRequest(min_position=2**62), timeout=10)
        )
        still_open = (
            resources.streams.in_use,
            resources.imports.in_use,
            resources.waits.in_use,
        )
        ended_early = [line for line in lines if line.startswith("ended")]
    finally:
        assert flood.stdin is not None
        flood.stdin.close()
        flood.wait(30)
        channel.close()

    print(
        f"\nopen: {STREAMS} streams, {IMPORTS} imports, {WAITS} waits; "
        f"server threads {threads_before} -> {threads_open}; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_open / 2**20:.0f} MiB "
        f"({(rss_open - rss_before) / 2**10 / (STREAMS + IMPORTS + WAITS):.0f} KiB per call)"
    )
    for name, samples, alone in [
        ("Health/Check", checks, idle_checks),
        ("GetSale", reads, idle_reads),
    ]:
        print(
            f"{name}: p50 {statistics.median(samples):.1f} ms, "
            f"p99 {percentile(samples, 0.99):.1f} ms, max {max(samples):.1f} ms "
            f"(nothing open: p50 {statistics.median(alone):.1f}, "
            f"p99 {percentile(alone, 0.99):.1f} ms)"
        )
    print(
        f"in {QUIET_SECONDS:g} s parked: {feeds_quiet} log reads by subscribers, "
        f"{views_quiet} reads of the views' positions; server CPU {cpu_quiet:.1%} of a core"
    )
    assert feeds_quiet == 0
    # Parked calls wake nobody: 628 of them once cost 70% of a core in wake-ups alone.
    assert cpu_quiet < 0.4
    assert views_quiet <= QUIET_SECONDS / VIEWS_SCAN_SECONDS + 1
    assert percentile(checks, 0.99) < P99_LIMIT_MS
    assert percentile(reads, 0.99) < P99_LIMIT_MS
    assert still_open == (STREAMS, IMPORTS, WAITS)
    expected = [
        (refused_feed, "STREAMS_EXHAUSTED", STREAMS),
        (refused_import, "IMPORTS_EXHAUSTED", IMPORTS),
        (refused_wait, "WAITS_EXHAUSTED", WAITS),
    ]
    for refused, reason, cap in expected:
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.reason == reason
        assert refused.metadata == {"limit": str(cap), "scope": "merchant"}
        assert refused.retry_delay_ms is not None
    assert ended_early == [], "a call of the flood ended before it let go"
