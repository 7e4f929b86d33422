"""Keeping the garbage collector's pauses short in the long-running processes.

A full collection walks every container object alive and holds the interpreter while it
does: every call in flight waits. Two things made those pauses long in `posledger serve`
(50 to 120 ms under load): the objects of startup (modules, classes, protobuf
descriptors), and the aggregates kept for commands. The first are frozen here once startup
is done; of the second, only the most recently used stay live, the rest are pickled
(`ledger.application.command_cache`).
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Moves what exists now to the collector's permanent generation, never walked again.

    Called once a process has built what it keeps for its whole life and before it starts
    serving. Frozen objects are still freed when their last reference goes; only a cycle
    among them would outlive its use, so garbage of startup is collected first.
    """
    gc.collect()
    gc.freeze()
