"""`posledger serve --processes N`: N server processes sharing one port.

Python runs one thread of Python at a time, so one process serves at most one core's worth
of commands. Each child is a whole server (its own group-commit writer, pool and views
runner; the views' locks make the runners standbys of each other) bound to the same port
with SO_REUSEPORT, so the kernel spreads connections over them. The supervisor holds the
port while the children start, restarts a child that dies, and on SIGTERM/SIGINT stops them
all with the same grace.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import structlog

log = structlog.get_logger("posledger")

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) socket holding `port` (0: a free one) for the children."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock


def supervise(
    processes: int,
    child_args: Sequence[str],
    env: Mapping[str, str],
    grace: float,
) -> int:
    """Runs `processes` copies of `posledger serve <child_args>` until told to stop."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    command = [sys.executable, "-m", "ledger.cli", "serve", *child_args]
    children: list[subprocess.Popen[bytes] | None] = [None] * processes
    restarts = [0] * processes

    def start(n: int) -> None:
        # The index tells a child which of the per-process ports (metrics) is its own.
        child_env = {**env, "POSLEDGER_PROCESS_INDEX": str(n)}
        child = subprocess.Popen(command, env=child_env)  # noqa: S603 (our own command)
        children[n] = child
        log.info("server_process_started", index=n, pid=child.pid)

    for n in range(processes):
        start(n)
    while not stopping.wait(0.2):
        for n, child in enumerate(children):
            if child is not None and child.poll() is not None and not stopping.is_set():
                log.error("server_process_exited", index=n, pid=child.pid, code=child.returncode)
                delay = RESTART_BACKOFF_SECONDS[min(restarts[n], len(RESTART_BACKOFF_SECONDS) - 1)]
                restarts[n] += 1
                time.sleep(delay)
                start(n)
    for child in children:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 10
    code = 0
    for child in children:
        if child is None:
            continue
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        # A child still starting when told to stop dies of the signal itself: that is a
        # clean stop too, it served nothing yet.
        if child.returncode not in (0, -signal.SIGTERM):
            code = code or 1
    log.info("stopped", processes=processes)
    return code


def child_environment(database_url: str) -> dict[str, str]:
    """The children's environment: all of ours, with the database fixed."""
    return {**os.environ, "POSLEDGER_DATABASE_URL": database_url}
