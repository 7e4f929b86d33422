"""AuditService: history, point-in-time sales, the live event feed, and the tamper check."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ledger.application import Ledger
from ledger.audit.events import AuditLog, Heads
from ledger.audit.store import ChainKeeper
from ledger.domain.errors import FieldViolation, InvalidRequest, ShuttingDown
from ledger.domain.validation import Checks
from ledger.grpc.convert import audit as convert
from ledger.grpc.convert import sales as convert_sales
from ledger.grpc.convert.shared import timestamp_field
from ledger.grpc.interceptors import current_principal
from ledger.grpc.resources import Resources
from ledger.v1 import audit_pb2 as pb
from ledger.v1 import audit_pb2_grpc
from projections import paging

FEED_PAGE = 500  # events read at a time for a subscriber: its memory stays bounded
# A caught-up subscriber sleeps until the shared watch of the log sees its merchant's next
# event; it looks again after this long (and reads, if the watch had no head yet).
FEED_RECHECK_SECONDS = 5.0
MAX_HISTORY_PAGE = 1000


def _auditor() -> str:
    # The interceptor has checked the audit.read permission (ledger/permissions.py).
    return current_principal().merchant_id


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, ledger: Ledger, resources: Resources, chain: ChainKeeper) -> None:
        self.ledger = ledger
        self.resources = resources
        self.log = AuditLog(ledger)
        self.chain = chain

    def GetHistory(
        self, request: pb.GetHistoryRequest, context: grpc.ServicerContext
    ) -> pb.GetHistoryResponse:
        merchant_id = _auditor()
        if not 0 <= request.page_size <= MAX_HISTORY_PAGE:
            raise InvalidRequest(
                [FieldViolation("page_size", f"must be between 0 and {MAX_HISTORY_PAGE}")]
            )
        limit = request.page_size or 100
        aggregate_id = self.ledger.owned_aggregate_id(merchant_id, request.aggregate_id)
        after = paging.decode("history", request.page_token, 1, (paging.integer,)) or [0]
        records = self.log.history(aggregate_id, after[0], limit + 1)
        token = (
            paging.encode("history", [records[limit - 1].version]) if len(records) > limit else ""
        )
        return pb.GetHistoryResponse(
            events=[convert.event_message(r) for r in records[:limit]], next_page_token=token
        )

    def GetSaleAt(
        self, request: pb.GetSaleAtRequest, context: grpc.ServicerContext
    ) -> pb.GetSaleAtResponse:
        merchant_id = _auditor()
        which = request.WhichOneof("at")
        if which is None:
            raise InvalidRequest([FieldViolation("at", "give a version or an as_of time")])
        if which == "version":
            if request.version < 1:
                raise InvalidRequest([FieldViolation("version", "must be at least 1")])
            sale = self.ledger.get_sale(merchant_id, request.sale_id, request.version)
        else:
            as_of = timestamp_field("as_of", request.as_of)
            sale = self.ledger.get_sale_at(merchant_id, request.sale_id, as_of)
        return pb.GetSaleAtResponse(sale=convert_sales.sale_message(sale))

    def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamEventsResponse]:
        merchant_id = _auditor()
        checks = Checks()
        if request.from_position < 0:
            checks.fail("from_position", "must not be negative")
        for i, name in enumerate(request.types):
            checks.text(f"types[{i}]", name, max_len=100, required=True)
        checks.raise_if_any()
        position = max(request.from_position, 1)
        types = list(request.types)
        heads = self.resources.heads

        def news(h: Heads) -> bool:  # or a client gone: either ends the wait
            return not context.is_active() or h.has_after(merchant_id, position)

        with self.resources.streams.held(merchant_id):
            # Once the watch has a head, every later event reaches it: the first read
            # below sees the earlier ones.
            heads.first(FEED_RECHECK_SECONDS)
            context.add_callback(heads.wake_all)  # a client that leaves ends its wait
            while context.is_active():
                if self.resources.stopping.is_set():
                    raise ShuttingDown("the server is shutting down; resume from your position")
                # Every event up to the merchant's last one the watch has seen is committed,
                # so a short page below has read them all, even those `types` skips.
                known = heads.current
                seen = known.merchants.get(merchant_id, 0) if known else 0
                records = self.log.feed(merchant_id, position, types, FEED_PAGE)
                for record in records:
                    # gRPC's flow control blocks here for a slow reader: only this stream
                    # waits, and it holds no lock, so writers never do.
                    yield pb.StreamEventsResponse(event=convert.event_message(record))
                    position = record.position + 1
                if len(records) < FEED_PAGE:
                    position = max(position, seen + 1)
                    # With a head known before that read, the watch reports every later
                    # event: sleep until it does, without reading. Else read again soon.
                    while (
                        not heads.wait(news, FEED_RECHECK_SECONDS, poll_caller=False)
                        and known is not None
                        and context.is_active()
                    ):
                        pass

    def VerifyLog(
        self, request: pb.VerifyLogRequest, context: grpc.ServicerContext
    ) -> pb.VerifyLogResponse:
        """The tamper check, answered for the caller's merchant only.

        The chain is one over every merchant's events, so the whole log is walked (a
        change anywhere before an event breaks the proof of that event); but only the
        caller's events are counted, and a finding at another merchant's event is
        reported without its position ("elsewhere"; a deleted event, whose merchant is
        gone with it, is reported to every merchant). Checking every merchant at once is
        the operator's `posledger audit verify`, which needs the database itself.
        """
        merchant_id = _auditor()
        checks = Checks()
        if request.from_position < 0:
            checks.fail("from_position", "must not be negative")
        if request.to_position < 0:
            checks.fail("to_position", "must not be negative")
        elif request.to_position and request.to_position < request.from_position:
            checks.fail("to_position", "must not be before from_position")
        checks.raise_if_any()
        report = self.chain.verify(through=request.to_position, merchant=merchant_id)
        finding = report.finding
        # A finding at another merchant's event is not shown; one that belongs to no one
        # known (a deleted event, an event with no metadata) is shown to everyone.
        theirs = finding is not None and report.finding_merchant in (None, merchant_id)
        return pb.VerifyLogResponse(
            ok=finding is None,
            events_verified=report.merchant_events,
            first_bad_position=finding.position if finding and theirs else 0,
            problem=(finding.kind.value if theirs else "elsewhere") if finding else "",
            chain_head=report.merchant_position,
        )
