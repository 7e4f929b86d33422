"""Benchmark: commands and queries through a real `posledger serve`, against its echo ceiling.

    POSLEDGER_DATABASE_URL=postgresql://root@127.0.0.1:5432/test \\
      .venv/bin/python bench/commands.py [--inflight 1,16,64] [--phase-seconds 5] [--rounds 2]

Starts `posledger serve --projections` as a subprocess on a free port, in a fresh schema
(POSLEDGER_DB_SCHEMA=bench_<random>) of --url / POSLEDGER_DATABASE_URL, or of the embedded
PostgreSQL when neither is set; the schema is dropped at the end. Once grpc.health reports
SERVING, separate client processes (grpc.aio, N concurrent tasks each, so the total in flight
is fixed) drive it in short phases, interleaved: for each round, for each in-flight level,
one phase of each workload:

    health  grpc.health.v1 Health/Check: the echo ceiling through the same server
    create  CreateSale, two open-item lines with a unit_price (no catalog)
    flow    a whole card sale: CreateSale -> RequestPayment (amount due) ->
            RecordPaymentResult (approved); commands/s and whole-sale latency
    get     GetSale of sales created before the measured phases
    list    ListSales, first page of 10

Per phase: calls/s (successful calls completed inside the phase; a sale flow counts its
three commands, and sales/s the sales), the ratio to the Health/Check rate at the same
in-flight level (median of the rounds), client-side latency p50/p99 of every successful
call started in the phase (calls still in flight at its end are waited for), errors (count
and the first status/message), server CPU per call (utime+stime of the server's processes
from /proc over the phase and its drain, divided by every call), how busy the machine was
(busy, and steal: time the hypervisor gave to other machines) and the client processes' own
CPU. At the end: the server's peak RSS (VmHWM, summed over its processes), its CPU while
idle, and how far behind the log the views are (the server runs with --projections).

With --views-apart the server runs with --no-projections --no-deliveries, next to a
`posledger projections run` and a `posledger deliveries run` (the deployment for the most
command throughput); their CPU and memory count as the server's. --workers-nice N starts
those two at niceness N (`nice -n N`), so under full load the machine serves commands first
and the followers catch up after. Payments call back to a
receiver the bench runs on loopback, answering 204 (its app gets a signing secret at the
seed); --callbacks unreachable names a host that never resolves, as runs before
2026-12-02 19:00 UTC did, so every callback fails and is retried while the run lasts.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.sql import SQL, Identifier

from ledger.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
    sales_pb2_grpc,
)
from ledger.v1 import sales_pb2 as pb

WORKLOADS = {
    "health": "Health/Check",
    "create": "CreateSale",
    "flow": "sale flow",
    # The sale flow with one catalog product at one location: every completed sale records
    # its stock movement on the same stock item, the busiest aggregate a store has.
    "hot": "hot-item flow",
    # The hot-item flow as an online sale: every payment request reserves on the same stock
    # item and is checked against what is available, every completion sells from it. Run it
    # at 32 in flight for the figure the README quotes (32 concurrent sales of one item).
    "reserve": "hot-item online",
    "get": "GetSale",
    "list": "ListSales",
}
FLOWS = ("flow", "hot", "reserve")  # workloads that run whole sales
SEED_SALES = 200  # sales created before measuring, for GetSale and ListSales
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- requests ------------------------------------------------------------------------------


def request_id() -> str:
    return str(uuid.uuid4())


def create_sale_request() -> pb.CreateSaleRequest:
    return pb.CreateSaleRequest(
        request_id=request_id(),
        location_id="store-1",
        channel=pb.SALES_CHANNEL_IN_STORE,
        currency_code="USD",
        line_items=[
            pb.LineItemInput(
                sku="BENCH-TEA", name="Green tea", quantity=2, unit_price=350, tax_rate_ppm=80000
            ),
            pb.LineItemInput(sku="BENCH-MUG", name="Mug", quantity=1, unit_price=1200),
        ],
    )


HOT_SKU = "BENCH-HOT"
# Where payments' results are called back: the bench's own receiver (see `Receiver`), or with
# --callbacks unreachable a host that never resolves here, so every callback fails and is
# retried for as long as the run lasts.
CALLBACK_URL_ENV = "POSLEDGER_BENCH_CALLBACK_URL"
UNREACHABLE_CALLBACK_URL = "https://pos.example.com/callback"


HOT_STOCK = 100_000_000  # received at the seed: no online sale is ever short


def hot_sale_request(channel: int = pb.SALES_CHANNEL_IN_STORE) -> pb.CreateSaleRequest:
    return pb.CreateSaleRequest(
        request_id=request_id(),
        location_id="store-1",
        channel=channel,
        currency_code="USD",
        line_items=[pb.LineItemInput(sku=HOT_SKU, quantity=1)],  # priced by the catalog
    )


def request_payment_request(sale: pb.Sale) -> pb.RequestPaymentRequest:
    return pb.RequestPaymentRequest(
        request_id=request_id(),
        sale_id=sale.id,
        amount=sale.amount_due,
        currency_code="USD",
        tender_types=[pb.TENDER_TYPE_CARD],
        callback_url=os.environ.get(CALLBACK_URL_ENV, UNREACHABLE_CALLBACK_URL),
        app_id="bench",
        api_version="1.0",
    )


def record_result_request(sale_id: str, payment_id: str) -> pb.RecordPaymentResultRequest:
    return pb.RecordPaymentResultRequest(
        request_id=request_id(),
        sale_id=sale_id,
        payment_id=payment_id,
        outcome=pb.PAYMENT_OUTCOME_APPROVED,
        tender=pb.TENDER_TYPE_CARD,
        card=pb.CardDetails(brand="visa", last4="4242", entry_method=pb.CARD_ENTRY_METHOD_DIPPED),
        auth_code="A1B2C3",
        # Not "bench-<uuid>": after a "-" the card-number check does not see a UUID, and
        # about 1 in 370 of them holds a Luhn-valid run of digits (INVALID_ARGUMENT).
        processor_reference=f"ch_{payment_id}",
    )


# ---- the callback receiver -----------------------------------------------------------------


def receive_callbacks(port: int, received: Any) -> None:
    """Answers every POST with 204, as a merchant's callback endpoint that is up does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()
            with received.get_lock():
                received.value += 1

        def log_message(self, *_: Any) -> None:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# ---- client processes ----------------------------------------------------------------------


@dataclass
class PhaseTask:
    workload: str
    concurrency: int
    start_at: float  # time.monotonic(), the same clock in every process on Linux
    seconds: float
    timeout: float
    sale_ids: list[str]


@dataclass
class ClientResult:
    calls: int = 0  # successful calls completed inside the phase
    all_calls: int = 0  # every call, errors and those finished after the phase (the drain)
    latencies: list[float] = field(default_factory=list)  # ms, successful calls
    sales: int = 0  # sale flows completed inside the phase
    sale_latencies: list[float] = field(default_factory=list)  # ms, whole sale flows
    errors: int = 0
    first_error: str | None = None
    cpu_seconds: float = 0.0  # this client process's CPU over the phase
    finished_at: float = 0.0
    created_sale_ids: list[str] = field(default_factory=list)


class Calls:
    """One client process's stubs, with every call timed and its error recorded."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float, result: ClientResult) -> None:
        self.sales = sales_pb2_grpc.SalesServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.timeout = timeout
        self.result = result
        self.end_at = math.inf

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any | None:
        """The response, or None after recording the error."""
        started = time.perf_counter()
        try:
            response = await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            self._count(started, f"{e.code().name}: {e.details()}")
            await asyncio.sleep(0.05)  # a failing server must not become a busy loop
            return None
        except Exception as e:  # record anything; the run goes on
            self._count(started, f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.05)
            return None
        self._count(started, None)
        return response

    def _count(self, started: float, error: str | None) -> None:
        now = time.perf_counter()
        result = self.result
        result.all_calls += 1
        if error is None:
            result.latencies.append((now - started) * 1000)
            if time.monotonic() <= self.end_at:
                result.calls += 1
        else:
            result.errors += 1
            if result.first_error is None:
                result.first_error = error


async def one_unit(calls: Calls, workload: str, sale_ids: list[str]) -> None:
    """One call, or for `flow` one whole sale."""
    if workload == "health":
        await calls.call(calls.health.Check, health_pb2.HealthCheckRequest(service=""))
    elif workload == "create":
        response = await calls.call(calls.sales.CreateSale, create_sale_request())
        if response is not None:
            calls.result.created_sale_ids.append(response.sale.id)
    elif workload == "get":
        await calls.call(calls.sales.GetSale, pb.GetSaleRequest(sale_id=random.choice(sale_ids)))
    elif workload == "list":
        await calls.call(calls.sales.ListSales, pb.ListSalesRequest(page_size=10))
    elif workload in FLOWS:
        started = time.perf_counter()
        sale_request = {
            "flow": create_sale_request,
            "hot": hot_sale_request,
            "reserve": lambda: hot_sale_request(pb.SALES_CHANNEL_ONLINE),
        }[workload]()
        created = await calls.call(calls.sales.CreateSale, sale_request)
        if created is None:
            return
        requested = await calls.call(
            calls.sales.RequestPayment, request_payment_request(created.sale)
        )
        if requested is None:
            return
        recorded = await calls.call(
            calls.sales.RecordPaymentResult,
            record_result_request(created.sale.id, requested.payment.id),
        )
        if recorded is None:
            return
        if recorded.sale.status != pb.SALE_STATUS_COMPLETED:
            calls.result.errors += 1
            calls.result.first_error = calls.result.first_error or (
                f"sale {created.sale.id} is {pb.SaleStatus.Name(recorded.sale.status)} after "
                "an approved payment of the amount due"
            )
            return
        calls.result.sale_latencies.append((time.perf_counter() - started) * 1000)
        if time.monotonic() <= calls.end_at:
            calls.result.sales += 1
    else:
        raise ValueError(f"unknown workload {workload!r}")


async def run_phase(channel: grpc.aio.Channel, task: PhaseTask) -> ClientResult:
    result = ClientResult()
    calls = Calls(channel, task.timeout, result)
    await asyncio.sleep(max(0.0, task.start_at - time.monotonic()))
    cpu_before = time.process_time()
    calls.end_at = end_at = task.start_at + task.seconds

    async def worker() -> None:
        while time.monotonic() < end_at:
            await one_unit(calls, task.workload, task.sale_ids)

    await asyncio.gather(*(worker() for _ in range(task.concurrency)))
    result.finished_at = time.monotonic()
    result.cpu_seconds = time.process_time() - cpu_before
    return result


async def client_loop(target: str, tasks: Queue[PhaseTask | None], results: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        while True:
            task = await loop.run_in_executor(None, tasks.get)
            if task is None:
                return
            results.put(await run_phase(channel, task))


def client_main(target: str, tasks: Queue[PhaseTask | None], results: Queue[Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    asyncio.run(client_loop(target, tasks, results))


# ---- the server and the machine -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(roots: Sequence[int]) -> list[int]:
    """`roots` and all their descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """utime+stime of the trees, plus what their exited (reaped) children used."""
    ticks = 0
    for pid in process_tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state is fields[0], so utime..cstime (stat 14-17) are [11:15]
        ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLOCK_TICKS


def tree_peak_rss_mib(roots: Sequence[int]) -> tuple[float, int]:
    """Sum of VmHWM over the trees (MiB), and how many processes it counted."""
    total_kib, count = 0, 0
    for pid in process_tree(roots):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            total_kib += int(match.group(1))
            count += 1
    return total_kib / 1024, count


def host_cpu_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat.

    Busy is what this machine ran (user, nice, system, irq, softirq); steal is time the
    hypervisor gave to other machines while this one wanted to run: noise from neighbours.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    # guest time is already counted inside user
    return user + nice + system + irq + softirq, steal, sum(values[:8])


def host_cpu_pct(before: tuple[int, int, int], after: tuple[int, int, int]) -> tuple[float, float]:
    """(busy %, steal %) of the machine's CPUs between two samples."""
    total = max(1, after[2] - before[2])
    return 100 * (after[0] - before[0]) / total, 100 * (after[1] - before[1]) / total


def machine(url: str) -> dict[str, Any]:
    mem_kib = int(re.findall(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "host": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
        "grpcio": grpc.__version__,
    }


def server_idle_cpu_pct(pids: Sequence[int], lag: ViewLag, seconds: float = 2.0) -> float:
    """The server's own background CPU (threads, views polling) once the views caught up."""
    waited = time.perf_counter()
    while lag.max_lag() and time.perf_counter() - waited < 30:
        time.sleep(0.1)
    before, started = tree_cpu_seconds(pids), time.perf_counter()
    time.sleep(seconds)
    return 100 * (tree_cpu_seconds(pids) - before) / (time.perf_counter() - started)


def drop_schemas(url: str, schema: str) -> None:
    """The schema and the views' schemas beside it (`<schema>__<view>_<generation>`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR starts_with(nspname, %s)",
            (schema, f"{schema}__"),
        ).fetchall()
        for (name,) in names:
            conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(name)))


def posledger_command() -> list[str]:
    beside = Path(sys.executable).parent / "posledger"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("posledger")
    if found:
        return [found]
    return [sys.executable, "-m", "ledger.cli"]


def wait_until_serving(target: str, server: subprocess.Popen[bytes], limit: float) -> float:
    started = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() - started < limit:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode}")
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the server was not SERVING after {limit:.0f} s")


class ViewLag:
    """How far each view is behind the log: its registry position against the log's head.

    The same figures as `posledger projections status`, read with plain queries (that command
    first takes the advisory lock every server of the product shares, to create what is
    missing; this is read-only).
    """

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.registry = Identifier(schema, "projection_views")
        self.events = Identifier(schema, "ledger_events")

    def status(self) -> list[dict[str, Any]]:
        head_row = self.conn.execute(
            SQL("SELECT max(notification_id) FROM {}").format(self.events)
        ).fetchone()
        head = int(head_row[0] or 0) if head_row else 0
        views = self.conn.execute(
            SQL("SELECT view, position FROM {} ORDER BY view").format(self.registry)
        ).fetchall()
        result = []
        for view, position in views:
            behind = self.conn.execute(
                SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(self.events),
                (position,),
            ).fetchone()
            result.append(
                {
                    "view": view,
                    "position": position,
                    "head": head,
                    "lag_events": int(behind[0]) if behind else 0,
                }
            )
        return result

    def max_lag(self) -> int:
        return max((s["lag_events"] for s in self.status()), default=0)

    def close(self) -> None:
        self.conn.close()


# ---- phases and figures --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass
class Phase:
    workload: str
    inflight: int
    round: int
    seconds: float
    clients: int
    calls: int
    calls_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    first_error: str | None
    server_cpu_ms_per_call: float | None
    host_busy_pct: float
    steal_pct: float
    client_cpu_pct: float
    drain_s: float
    sales_per_s: float | None = None
    sale_p50_ms: float | None = None
    sale_p99_ms: float | None = None
    vs_echo: float | None = None
    views_lag_after: int | None = None


class Bench:
    def __init__(
        self, args: argparse.Namespace, target: str, server_pids: list[int], env: dict[str, str]
    ) -> None:
        self.args = args
        self.env = env
        self.target = target
        self.server_pids = server_pids
        ctx = multiprocessing.get_context("spawn")
        self.results: Queue[Any] = ctx.Queue()
        self.task_queues: list[Queue[PhaseTask | None]] = []
        self.clients = []
        for _ in range(args.clients):
            tasks: Queue[PhaseTask | None] = ctx.Queue()
            process = ctx.Process(
                target=client_main, args=(target, tasks, self.results), daemon=True
            )
            process.start()
            self.task_queues.append(tasks)
            self.clients.append(process)
        self.sale_ids: list[str] = []

    def run(
        self, workload: str, inflight: int, seconds: float
    ) -> tuple[list[ClientResult], dict[str, Any]]:
        clients = 1 if inflight == 1 else min(self.args.clients, inflight)
        start_at = time.monotonic() + 0.2
        for queue, concurrency in zip(self.task_queues, split(inflight, clients), strict=False):
            queue.put(
                PhaseTask(
                    workload, concurrency, start_at, seconds, self.args.timeout, self.sale_ids
                )
            )
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = tree_cpu_seconds(self.server_pids)
        host_before = host_cpu_ticks()
        # A call may take up to its deadline after the phase; past that a client has died.
        limit = start_at + seconds + 3 * self.args.timeout + 30
        results = [
            self.results.get(timeout=max(1.0, limit - time.monotonic())) for _ in range(clients)
        ]
        cpu = tree_cpu_seconds(self.server_pids) - cpu_before
        busy, steal = host_cpu_pct(host_before, host_cpu_ticks())
        finished = max(r.finished_at for r in results)
        return results, {
            "clients": clients,
            "server_cpu": cpu,
            "host_busy_pct": busy,
            "steal_pct": steal,
            "drain_s": max(0.0, finished - (start_at + seconds)),
            "wall_s": finished - start_at,
        }

    def seed(self) -> None:
        """Sales for GetSale and ListSales, the hot item's product, a short warm-up."""
        if self.args.callbacks == "receiver":
            # The app payments are filed under signs its callbacks (else none is sent).
            subprocess.run(
                [*posledger_command(), "deliveries", "secret", "--merchant=dev", "--app=bench"],
                env=self.env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with grpc.insecure_channel(self.target) as channel:
            hot = catalog_pb2_grpc.CatalogServiceStub(channel).CreateProduct(
                catalog_pb2.CreateProductRequest(
                    request_id=request_id(),
                    sku=HOT_SKU,
                    name="Hot item",
                    price=500,
                    currency_code="USD",
                ),
                timeout=30,
            )
            inventory_pb2_grpc.InventoryServiceStub(channel).ReceiveStock(
                inventory_pb2.ReceiveStockRequest(
                    request_id=request_id(),
                    product_id=hot.product.id,
                    location_id="store-1",
                    quantity=HOT_STOCK,
                ),
                timeout=30,
            )
        for _ in range(20):
            if len(self.sale_ids) >= SEED_SALES:
                break
            results, _ = self.run("create", min(16, 2 * self.args.clients), 1.0)
            for r in results:
                self.sale_ids.extend(r.created_sale_ids)
                if r.errors:
                    print(f"  seeding: {r.errors} errors, first: {r.first_error}")
        for workload in self.args.workloads:
            self.run(workload, 16, self.args.warmup_seconds)

    def phase(self, workload: str, inflight: int, round_: int) -> Phase:
        seconds = self.args.phase_seconds
        results, info = self.run(workload, inflight, seconds)
        latencies = [x for r in results for x in r.latencies]
        sale_latencies = [x for r in results for x in r.sale_latencies]
        calls = sum(r.calls for r in results)
        all_calls = sum(r.all_calls for r in results)
        if workload == "create":
            self.sale_ids.extend(i for r in results for i in r.created_sale_ids[:50])
        phase = Phase(
            workload=workload,
            inflight=inflight,
            round=round_,
            seconds=seconds,
            clients=info["clients"],
            calls=calls,
            calls_per_s=calls / seconds,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            errors=sum(r.errors for r in results),
            first_error=next((r.first_error for r in results if r.first_error), None),
            server_cpu_ms_per_call=1000 * info["server_cpu"] / all_calls if all_calls else None,
            host_busy_pct=info["host_busy_pct"],
            steal_pct=info["steal_pct"],
            client_cpu_pct=100 * sum(r.cpu_seconds for r in results) / info["wall_s"],
            drain_s=info["drain_s"],
        )
        if workload in FLOWS:
            phase.sales_per_s = sum(r.sales for r in results) / seconds
            phase.sale_p50_ms = percentile(sale_latencies, 0.50)
            phase.sale_p99_ms = percentile(sale_latencies, 0.99)
        return phase

    def close(self) -> None:
        for queue in self.task_queues:
            queue.put(None)
        for process in self.clients:
            process.join(5)
            if process.is_alive():
                process.terminate()


def echo_rates(phases: list[Phase]) -> dict[int, float]:
    by_level: dict[int, list[float]] = {}
    for p in phases:
        if p.workload == "health":
            by_level.setdefault(p.inflight, []).append(p.calls_per_s)
    return {level: statistics.median(rates) for level, rates in by_level.items()}


COLUMNS = [  # (heading, key, format)
    ("calls/s", "calls_per_s", ",.0f"),
    ("vs echo", "vs_echo", ".3f"),
    ("p50 ms", "p50_ms", ",.1f"),
    ("p99 ms", "p99_ms", ",.1f"),
    ("sales/s", "sales_per_s", ",.1f"),
    ("sale p50 ms", "sale_p50_ms", ",.0f"),
    ("sale p99 ms", "sale_p99_ms", ",.0f"),
    ("server CPU ms/call", "server_cpu_ms_per_call", ".2f"),
    ("host busy %", "host_busy_pct", ".0f"),
    ("steal %", "steal_pct", ".0f"),
    ("clients CPU %", "client_cpu_pct", ".0f"),
]


def summarize(phases: list[Phase]) -> list[dict[str, Any]]:
    """Median over the rounds of each workload x in-flight level; errors are summed."""
    groups: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        groups.setdefault((p.workload, p.inflight), []).append(p)

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    rows: list[dict[str, Any]] = []
    for (workload, inflight), group in groups.items():
        rows.append(
            {
                "workload": workload,
                "inflight": inflight,
                "rounds": len(group),
                **{key: med([getattr(p, key) for p in group]) for _, key, _ in COLUMNS},
                "errors": sum(p.errors for p in group),
                "first_error": next((p.first_error for p in group if p.first_error), None),
            }
        )
    order = list(WORKLOADS)
    rows.sort(key=lambda r: (r["inflight"], order.index(r["workload"])))
    return rows


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def errors_cell(count: int, first: str | None, width: int = 70) -> str:
    if not count:
        return "0"
    text = (first or "").replace("|", "/").replace("\n", " ")
    return f"{count} ({text[:width]}{'…' if len(text) > width else ''})"


def phase_line(p: Phase) -> str:
    sale = ""
    if p.workload in FLOWS:
        sale = (
            f", {fmt(p.sales_per_s, ',.1f')} sales/s, sale p50/p99 "
            f"{fmt(p.sale_p50_ms, ',.1f')}/{fmt(p.sale_p99_ms, ',.1f')} ms"
        )
    return (
        f"  round {p.round} {WORKLOADS[p.workload]:<12} in flight {p.inflight:>3}: "
        f"{fmt(p.calls_per_s, ',.1f')} calls/s ({fmt(p.vs_echo, '.3f')} x echo), "
        f"p50/p99 {fmt(p.p50_ms, ',.1f')}/{fmt(p.p99_ms, ',.1f')} ms{sale}, "
        f"server CPU {fmt(p.server_cpu_ms_per_call, '.2f')} ms/call, host busy "
        f"{p.host_busy_pct:.0f}%, steal {p.steal_pct:.0f}%, clients {p.client_cpu_pct:.0f}% CPU, "
        f"drain {p.drain_s:.1f} s, "
        f"errors {errors_cell(p.errors, p.first_error)}"
        + (f", views lag {p.views_lag_after}" if p.views_lag_after is not None else "")
    )


def markdown_table(rows: list[dict[str, Any]], rounds: bool = False) -> str:
    """A row per phase (`rounds`) or per summary row."""
    head = ["round"] if rounds else []
    head += ["workload", "in flight", *(c[0] for c in COLUMNS), "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["round"])] if rounds else []
        cells += [WORKLOADS[r["workload"]], str(r["inflight"])]
        cells += [fmt(r[key], spec) for _, key, spec in COLUMNS]
        cells.append(errors_cell(r["errors"], r["first_error"], 40))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Commands and queries through a real `posledger serve`, "
        "against the Health/Check echo rate of the same server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--url",
        help="PostgreSQL URL (default: env POSLEDGER_DATABASE_URL, else the embedded one)",
    )
    parser.add_argument("--inflight", default="1,16,64", help="comma list of calls in flight")
    parser.add_argument(
        "--port", type=int, default=0, help="the server's port (default: any free one)"
    )
    parser.add_argument("--phase-seconds", type=float, default=5.0, help="length of a phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases of each kind")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed to `posledger serve` (repeatable), e.g. --serve-arg=--workers=32",
    )
    parser.add_argument(
        "--clients", type=int, default=2, help="client processes (above 1 in flight)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of every call (s)")
    parser.add_argument(
        "--warmup-seconds", type=float, default=1.0, help="unmeasured warm-up of each workload"
    )
    parser.add_argument(
        "--views-apart",
        action="store_true",
        help="serve with --no-projections --no-deliveries, and run `posledger projections run`"
        " and `posledger deliveries run` as processes of their own (their CPU and memory count"
        " as the server's)",
    )
    parser.add_argument(
        "--callbacks",
        choices=("receiver", "unreachable"),
        default="receiver",
        help="where payments call back: a receiver of the bench answering 204 on loopback"
        " (default), or a host that never resolves (every callback fails and is retried)",
    )
    parser.add_argument(
        "--workers-nice",
        type=int,
        default=0,
        help="with --views-apart: run the views and deliveries workers at this niceness",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--keep-log", action="store_true", help="keep the server's log file")
    args = parser.parse_args()
    args.inflight = [int(n) for n in args.inflight.split(",") if n]
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(
            f"unknown workloads {', '.join(sorted(unknown))}; known: {', '.join(WORKLOADS)}"
        )
    if any(n < 1 for n in args.inflight) or args.rounds < 1 or args.clients < 1:
        parser.error("--inflight levels, --rounds and --clients must be at least 1")
    return args


def command_line(args: argparse.Namespace) -> str:
    prefix = ""
    if not args.url and os.environ.get("POSLEDGER_DATABASE_URL"):
        prefix = f"POSLEDGER_DATABASE_URL={os.environ['POSLEDGER_DATABASE_URL']} "
    return prefix + shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def main() -> None:
    args = parse_args()
    # Stopped with SIGTERM, still stop the server and drop the schema.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = command_line(args)
    url = args.url or os.environ.get("POSLEDGER_DATABASE_URL")
    if not url:
        from ledger.store import Settings, database_url

        url = database_url(Settings.from_env())  # starts the embedded PostgreSQL
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    port = args.port or free_port()
    target = f"127.0.0.1:{port}"
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    info = machine(url)
    print(f"command:  {command}")
    print(
        f"machine:  {info['host']}, {info['nproc']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, PostgreSQL {info['postgresql']}, grpcio {info['grpcio']}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    print(f"database: {re.sub(r'//[^@/]*@', '//', url)} schema {schema}")

    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the server's lifetime
        prefix=f"posledger-{schema}-", suffix=".log", delete=False
    )
    serve = [
        *posledger_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--no-projections", "--no-deliveries"] if args.views_apart else ["--projections"]),
        *args.serve_arg,
    ]
    apart = [["projections", "run"], ["deliveries", "run"]] if args.views_apart else []
    env = {**os.environ, "POSLEDGER_DATABASE_URL": url, "POSLEDGER_DB_SCHEMA": schema}
    received = multiprocessing.get_context("spawn").Value("q", 0)
    receiver = None
    if args.callbacks == "receiver":
        receiver_port = free_port()
        receiver = multiprocessing.get_context("spawn").Process(
            target=receive_callbacks, args=(receiver_port, received), daemon=True
        )
        receiver.start()
        # The clients' payment requests name it; the server may deliver to loopback.
        os.environ[CALLBACK_URL_ENV] = f"http://127.0.0.1:{receiver_port}/callback"
        env["POSLEDGER_DELIVERY_ALLOWED_NETWORKS"] = "127.0.0.1/32"
        print(f"callbacks: {os.environ[CALLBACK_URL_ENV]} (a receiver answering 204)")
    else:
        print(f"callbacks: {UNREACHABLE_CALLBACK_URL} (never resolves: each one is retried)")
    print(f"server:   {shlex.join(serve)} (log {log_file.name})")
    server = subprocess.Popen(serve, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    workers = []
    for worker in apart:
        print(f"worker:   posledger {shlex.join(worker)}")
        workers.append(
            subprocess.Popen(
                [*posledger_command(), *worker],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.nice(args.workers_nice)) if args.workers_nice else None,
            )
        )
    pids = [server.pid, *(w.pid for w in workers)]
    bench: Bench | None = None
    lag: ViewLag | None = None
    phases: list[Phase] = []
    failed = True
    try:
        ready = wait_until_serving(target, server, 120)
        print(f"server pid {server.pid} SERVING after {ready:.1f} s")
        lag = ViewLag(url, schema)
        bench = Bench(args, target, pids, env)
        bench.seed()
        if not bench.sale_ids:
            raise RuntimeError("could not create any sale to read back")
        print(f"seeded {len(bench.sale_ids)} sales; warm-up done")
        idle_cpu_pct = server_idle_cpu_pct(pids, lag)
        print(f"server CPU while idle (views caught up): {idle_cpu_pct:.1f}% of a core")
        echo: dict[int, float] = {}
        for round_ in range(1, args.rounds + 1):
            for inflight in args.inflight:
                for workload in args.workloads:
                    p = bench.phase(workload, inflight, round_)
                    if workload in ("create", *FLOWS):
                        p.views_lag_after = lag.max_lag()
                    phases.append(p)
                    echo = echo_rates(phases)
                    if inflight in echo:
                        p.vs_echo = p.calls_per_s / echo[inflight]
                    print(phase_line(p), flush=True)
        # Ratios against the median of all rounds, now that every round ran.
        echo = echo_rates(phases)
        for p in phases:
            p.vs_echo = p.calls_per_s / echo[p.inflight] if p.inflight in echo else None

        peak_rss, rss_processes = tree_peak_rss_mib(pids)
        views_end = lag.status()
        waited = time.perf_counter()
        while lag.max_lag() and time.perf_counter() - waited < 60:
            time.sleep(0.2)
        caught_up_s = time.perf_counter() - waited
        views_caught_up = lag.max_lag() == 0
        load_end = os.getloadavg()
        failed = False
    finally:
        if bench:
            bench.close()
        if lag:
            lag.close()
        for process in (server, *workers):
            process.send_signal(signal.SIGTERM)
        for process in (server, *workers):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if receiver is not None:
            receiver.terminate()
        log_file.close()
        drop_schemas(url, schema)
        if failed or args.keep_log:
            print(f"server log kept: {log_file.name}")
            if failed:
                print(Path(log_file.name).read_text()[-3000:])
        else:
            os.unlink(log_file.name)

    rows = summarize(phases)
    print()
    print(f"server peak RSS (VmHWM): {peak_rss:.0f} MiB over {rss_processes} process(es)")
    print(f"server CPU while idle: {idle_cpu_pct:.1f}% of a core")
    if receiver is not None:
        print(f"callbacks received: {received.value}")
    print("views at the end of the load (lag = events of the log not applied yet):")
    for s in views_end:
        print(
            f"  {s['view']:<10} position {s['position']:>8}  head {s['head']:>8}  "
            f"lag {s['lag_events']:>6} events"
        )
    print(
        f"  caught up {caught_up_s:.1f} s after the load"
        if views_caught_up
        else f"  NOT caught up {caught_up_s:.0f} s after the load"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    print()
    print("## Summary (median of the rounds)\n")
    print(markdown_table(rows))
    print("\n## Every phase\n")
    print(markdown_table([asdict(p) for p in phases], rounds=True))
    print()
    print(
        f"Measured {started_at:%Y-%m-%d %H:%M} UTC on {info['host']}: {info['nproc']} cores, "
        f"{info['memory_gib']} GiB, Python {info['python']}, PostgreSQL {info['postgresql']}, "
        f"grpcio {info['grpcio']}; load average {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end; server `{shlex.join(['posledger', *serve[1:]])}`"
        + "".join(f", worker `posledger {shlex.join(w)}`" for w in apart)
        + "."
    )
    print(f"Command: `{command}`")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "started_at": started_at.isoformat(),
                    "machine": info,
                    "load_average_start": load_start,
                    "load_average_end": load_end,
                    "server": serve[1:],
                    "options": {k: v for k, v in vars(args).items() if k != "url"},
                    "phases": [asdict(p) for p in phases],
                    "summary": rows,
                    "echo_per_s": echo_rates(phases),
                    "server_peak_rss_mib": peak_rss,
                    "server_idle_cpu_pct": idle_cpu_pct,
                    "server_processes": rss_processes,
                    "views_at_end": views_end,
                    "views_caught_up_after_s": caught_up_s if views_caught_up else None,
                },
                indent=2,
                default=str,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
