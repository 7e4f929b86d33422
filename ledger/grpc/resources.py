"""What the long-lived calls of one server share (see ledger/limits.py): their caps, one
watch of the log's head for every live event feed, one watch of the views' positions for
every parked `min_position` wait, and the signal that the server is stopping."""

from __future__ import annotations

import threading

from ledger.application import Ledger
from ledger.audit.events import AuditLog, Heads
from ledger.limits import Limits, Slots, Watch
from projections.runner import Projections

FEED_SCAN_SECONDS = 0.1  # how often the log's head is read while any feed waits
VIEWS_SCAN_SECONDS = 0.02  # how often the views' positions are read while any call waits


class Resources:
    def __init__(self, ledger: Ledger, projections: Projections, limits: Limits) -> None:
        self.limits = limits
        self.stopping = threading.Event()
        self.streams = Slots(
            "event streams", "STREAMS_EXHAUSTED", limits.streams, limits.streams_per_merchant
        )
        self.imports = Slots(
            "import streams", "IMPORTS_EXHAUSTED", limits.imports, limits.imports_per_merchant
        )
        self.waits = Slots(
            "min_position waits", "WAITS_EXHAUSTED", limits.waits, limits.waits_per_merchant
        )
        self.heads: Watch[Heads] = Watch(
            "feed-heads", AuditLog(ledger).heads, FEED_SCAN_SECONDS, self.stopping
        )
        self.view_positions: Watch[dict[str, int]] = Watch(
            "view-positions", lambda _: projections.positions(), VIEWS_SCAN_SECONDS, self.stopping
        )

    def stop(self) -> None:
        """Ends every parked call at once: each answers UNAVAILABLE SERVER_SHUTTING_DOWN."""
        self.stopping.set()
        self.heads.wake_all()
        self.view_positions.wake_all()
