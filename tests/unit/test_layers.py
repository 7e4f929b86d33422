"""The rooms of docs/ARCHITECTURE.md and what each may import, checked on the source.

Imports inside functions and under TYPE_CHECKING count too: a room that needs another
only for a type still depends on it. A new module belongs to the room its path names.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Room → the other rooms of ours it may import. The domain imports none: it knows no I/O.
ALLOWED: dict[str, set[str]] = {
    "ledger.domain": set(),
    # What readers of the log need of the ledger; it imports none of our rooms.
    "ledger.event_log": set(),
    "ledger.application": {
        "ledger.domain",
        "ledger.event_log",
        "ledger.store",
        "ledger.group_commit",
        "ledger.keys",
    },
    "ledger.audit": {"ledger.domain", "ledger.application", "ledger.store"},
    # The views read the log through `EventLog`, never the application.
    "projections": {"ledger.domain", "ledger.event_log", "ledger.store", "ledger.limits"},
    "ledger.deliveries": {
        "ledger.domain",
        "ledger.application",
        "ledger.event_log",
        "ledger.store",
        "ledger.run_loop",
        "projections",
    },
    "ledger.grpc": {
        "ledger.domain",
        "ledger.application",
        "ledger.audit",
        "ledger.deliveries",
        "projections",
        "ledger.event_log",
        "ledger.store",
        "ledger.keys",
        "ledger.permissions",
        "ledger.limits",
        "ledger.monitor",
        "ledger.metrics",
        "ledger.v1",
    },
}
# Outside libraries a pure room may use: the standard library and the event-sourcing
# library's domain side (aggregates and events, not its persistence).
PURE_THIRD_PARTY = {"eventsourcing.domain", "eventsourcing.utils"}
ROOMS = [
    *ALLOWED,
    "ledger.cli",
    "ledger.bootstrap",
    "ledger.store",
    "ledger.group_commit",
    "ledger.keys",
    "ledger.permissions",
    "ledger.limits",
    "ledger.monitor",
    "ledger.metrics",
    "ledger.tracing",
    "ledger.logging",
    "ledger.supervisor",
    "ledger.expiry",
    "ledger.run_loop",
    "ledger.v1",
]


def room_of(module: str) -> str | None:
    matches = [r for r in ROOMS if module == r or module.startswith(r + ".")]
    return max(matches, key=len) if matches else None


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "ledger":  # `from ledger import metrics`
                found |= {f"ledger.{alias.name}" for alias in node.names}
    return found


def modules() -> list[tuple[str, Path]]:
    result = []
    for top in ("ledger", "projections"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "v1" in path.parts:
                continue  # generated
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            result.append((name.removesuffix(".__init__"), path))
    return result


MODULES = modules()


def test_the_rooms_are_found() -> None:
    rooms = {room_of(name) for name, _ in MODULES}
    assert set(ALLOWED) <= rooms
    assert len(MODULES) > 60


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_each_room_imports_only_what_it_may(name: str, path: Path) -> None:
    room = room_of(name)
    if room not in ALLOWED:
        return  # the outer rooms (cli, wiring) may use any other
    ours = {r for m in imports_of(path) if (r := room_of(m)) is not None} - {room}
    assert ours <= ALLOWED[room], f"{name} imports {sorted(ours - ALLOWED[room])}"


def test_only_the_entry_points_use_the_composition_root() -> None:
    # Parts are handed what they need (ledger/bootstrap.py builds them): none builds its own.
    users = [n for n, p in MODULES if "ledger.bootstrap" in imports_of(p)]
    assert users
    assert [n for n in users if room_of(n) != "ledger.cli"] == []


@pytest.mark.parametrize(
    ("name", "path"),
    [(n, p) for n, p in MODULES if room_of(n) == "ledger.domain"],
    ids=[n for n, _ in MODULES if room_of(n) == "ledger.domain"],
)
def test_the_domain_uses_no_io_library(name: str, path: Path) -> None:
    for module in imports_of(path):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or module == "__future__" or room_of(module):
            continue
        assert module in PURE_THIRD_PARTY, f"{name} imports {module}"
