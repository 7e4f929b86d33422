"""A TCP proxy between the ledger and PostgreSQL that loses the answer to a commit.

The group-commit writer sends each group as one call of `posledger_commit_group` on an
autocommit connection: PostgreSQL runs it and commits at the Sync, then sends
ReadyForQuery ('Z'). The proxy reads the server's messages one by one; on a connection
that has sent that call, once armed, it forwards everything up to the call's
CommandComplete ('C') but not the ReadyForQuery after it, and cuts both sides instead. So
the group is committed and the writer never hears so: exactly a connection lost after
COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Only the writer's call has the function's name followed by its first parameter (the
# function's creation names it too, with parameter names).
COMMIT_CALL = b'posledger_commit_group"($1'

# The first message of a connection may ask for SSL or GSS encryption (length 8, then one
# of these codes); any other is the startup message.
ENCRYPTION_REQUESTS = {80877103, 80877104}


@dataclass
class _Connection:
    writer: bool = False  # has sent the commit call
    completed: bool = False  # a statement completed since the last ReadyForQuery


class CommitDroppingProxy:
    """Runs on its own event loop thread; `drop_next(n)` arms it for the next n commits."""

    def __init__(self, database_url: str) -> None:
        self.upstream = conninfo_to_dict(database_url)
        self.dropped = 0
        self._to_drop = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> CommitDroppingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self) -> str:
        """The database's conninfo, through the proxy (which refuses encryption, to read it)."""
        params: dict[str, Any] = {**self.upstream, "host": "127.0.0.1", "port": str(self.port)}
        params.update(sslmode="disable", gssencmode="disable")
        return make_conninfo(**params)

    def drop_next(self, commits: int) -> None:
        with self._lock:
            self._to_drop = commits

    def _take_drop(self) -> bool:
        with self._lock:
            if self._to_drop <= 0:
                return False
            self._to_drop -= 1
            self.dropped += 1
            return True

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop) - {asyncio.current_task()}:
                task.cancel()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = str(self.upstream.get("host") or "localhost")
        port = int(self.upstream.get("port") or 5432)
        if host.startswith("/"):  # a Unix socket directory (the embedded PostgreSQL)
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _handle(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await self._open_upstream()
        conn = _Connection()

        def cut() -> None:
            client_out.transport.abort()
            server_out.transport.abort()

        async def refuse_encryption() -> None:
            """Answers "no" to SSL and GSS requests (psycopg then starts in clear), and
            passes the first message that is not one on."""
            while True:
                first = await client_in.readexactly(8)
                if int.from_bytes(first[4:8], "big") not in ENCRYPTION_REQUESTS:
                    server_out.write(first)
                    return
                client_out.write(b"N")
                await client_out.drain()

        async def from_client() -> None:
            await refuse_encryption()
            tail = b""
            while data := await client_in.read(65536):
                if COMMIT_CALL in tail + data:
                    conn.writer = True
                tail = data[-len(COMMIT_CALL) :]
                server_out.write(data)
                await server_out.drain()
            server_out.close()

        async def from_server() -> None:
            while True:
                header = await server_in.readexactly(5)
                body = await server_in.readexactly(int.from_bytes(header[1:5], "big") - 4)
                kind = header[:1]
                if kind == b"C":
                    conn.completed = True
                elif kind == b"Z":
                    if conn.writer and conn.completed and self._take_drop():
                        cut()  # committed; the writer never gets to know
                        return
                    conn.completed = False
                client_out.write(header + body)
                await client_out.drain()

        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            await asyncio.gather(from_client(), from_server())
        cut()
