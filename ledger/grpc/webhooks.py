"""WebhookService and ChangeFeedService: parse, call, build the response (`convert.webhooks`)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ledger.application import Ledger
from ledger.audit.events import Heads
from ledger.deliveries.changes import Kind
from ledger.deliveries.outbox import OutboxView, changes_at
from ledger.deliveries.store import DeliveryStore
from ledger.deliveries.webhooks import Webhooks
from ledger.domain.errors import FieldViolation, InvalidRequest, NotFound, ShuttingDown
from ledger.domain.validation import Checks
from ledger.grpc.convert import webhooks as convert
from ledger.grpc.interceptors import current_principal
from ledger.grpc.resources import Resources
from ledger.v1 import webhooks_pb2 as pb
from ledger.v1 import webhooks_pb2_grpc
from projections import paging, source

FEED_PAGE = 500  # events read per query while a feed catches up
FEED_RECHECK_SECONDS = 5.0  # a feed whose watch has no head yet reads again this often


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.store = DeliveryStore(ledger.ledger_recorder.datastore)
        self.webhooks = Webhooks(self.store)

    def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.CreateWebhookResponse:
        subscription, secret = self.webhooks.create(
            current_principal().merchant_id,
            request.request_id,
            request.url,
            convert.kinds(request.kinds),
            request.description,
        )
        return pb.CreateWebhookResponse(
            webhook=convert.webhook_message(subscription), signing_secret=secret
        )

    def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhooksResponse:
        found = self.webhooks.list(current_principal().merchant_id)
        return pb.ListWebhooksResponse(webhooks=[convert.webhook_message(s) for s in found])

    def UpdateWebhook(
        self, request: pb.UpdateWebhookRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWebhookResponse:
        paths = set(request.update_mask.paths)
        unknown = paths - {"url", "kinds", "description", "enabled"}
        if unknown or not paths:
            raise InvalidRequest(
                [
                    FieldViolation(
                        "update_mask", "name one or more of url, kinds, description, enabled"
                    )
                ]
            )
        subscription = self.webhooks.update(
            current_principal().merchant_id,
            request.webhook_id,
            url=request.url if "url" in paths else None,
            kinds=convert.kinds(request.kinds) if "kinds" in paths else None,
            description=request.description if "description" in paths else None,
            enabled=request.enabled if "enabled" in paths else None,
        )
        return pb.UpdateWebhookResponse(webhook=convert.webhook_message(subscription))

    def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWebhookResponse:
        self.webhooks.delete(current_principal().merchant_id, request.webhook_id)
        return pb.DeleteWebhookResponse()

    def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        secret = self.webhooks.rotate_secret(
            current_principal().merchant_id, request.webhook_id, request.request_id
        )
        return pb.RotateWebhookSecretResponse(signing_secret=secret)

    def RotateCallbackSecret(
        self, request: pb.RotateCallbackSecretRequest, context: grpc.ServicerContext
    ) -> pb.RotateCallbackSecretResponse:
        principal = current_principal()
        checks = Checks()
        checks.text("request_id", request.request_id, max_len=128, required=True)
        checks.raise_if_any()
        secret = self.store.rotate_app_secret(
            principal.merchant_id, principal.app_id, request.request_id
        )
        return pb.RotateCallbackSecretResponse(app_id=principal.app_id, signing_secret=secret)

    def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListDeliveriesResponse:
        merchant = current_principal().merchant_id
        subscription = None
        if request.webhook_id:
            subscription = self.webhooks.get(merchant, request.webhook_id).subscription_id
        size = paging.page_size(request.page_size)
        before = paging.decode("deliveries", request.page_token, 2, [paging.integer, paging.text])
        rows = self.store.page(
            merchant,
            subscription,
            convert.STATUSES.get(request.status),
            (before[0], before[1]) if before else None,
            size + 1,
        )
        attempts = self.store.attempts_of([r["delivery_id"] for r in rows[:size]])
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = paging.encode("deliveries", [last["position"], str(last["delivery_id"])])
        return pb.ListDeliveriesResponse(
            deliveries=[
                convert.delivery_message(r, attempts[r["delivery_id"]]) for r in rows[:size]
            ],
            next_page_token=token,
        )

    def Redeliver(
        self, request: pb.RedeliverRequest, context: grpc.ServicerContext
    ) -> pb.RedeliverResponse:
        merchant = current_principal().merchant_id
        row = self.store.redeliver(merchant, convert.delivery_id(request.delivery_id))
        if row is None:
            raise NotFound(f"delivery {request.delivery_id} not found", reason="DELIVERY_NOT_FOUND")
        attempts = self.store.attempts_of([row["delivery_id"]])
        return pb.RedeliverResponse(
            delivery=convert.delivery_message(row, attempts[row["delivery_id"]])
        )


class ChangeFeedServicer(webhooks_pb2_grpc.ChangeFeedServiceServicer):
    def __init__(self, ledger: Ledger, resources: Resources) -> None:
        self.ledger = ledger
        self.resources = resources

    def StreamChanges(
        self, request: pb.StreamChangesRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamChangesResponse]:
        if request.after_position < 0:
            raise InvalidRequest([FieldViolation("after_position", "must not be negative")])
        wanted = set(convert.kinds(request.kinds)) or set(Kind)
        if None in wanted:
            raise InvalidRequest([FieldViolation("kinds", "must name known kinds of change")])
        merchant = current_principal().merchant_id
        position = request.after_position
        heads = self.resources.heads

        def news(h: Heads) -> bool:  # or a client gone: either ends the wait
            return not context.is_active() or h.has_after(merchant, position + 1)

        # A feed is a stream like StreamEvents: the same caps, the same shared watch of the
        # log (an idle feed reads nothing), the same end on shutdown.
        with self.resources.streams.held(merchant):
            heads.first(FEED_RECHECK_SECONDS)
            context.add_callback(heads.wake_all)
            while context.is_active():
                if self.resources.stopping.is_set():
                    raise ShuttingDown("the server is shutting down; resume from your position")
                known = heads.current  # read before the head: every later event wakes us
                head = self.ledger.event_log.head()
                if head > position:
                    log = self.ledger.event_log
                    events = source.read_page(log, position, head, FEED_PAGE, OutboxView.topics)
                    for change in changes_at(log, events):
                        if change.merchant_id == merchant and change.kind in wanted:
                            yield convert.change_message(change)
                    if len(events) == FEED_PAGE:
                        position = events[-1].position
                        continue
                    position = head  # a short page: every event up to `head` was read
                while (
                    not heads.wait(news, FEED_RECHECK_SECONDS, poll_caller=False)
                    and known is not None
                    and context.is_active()
                ):
                    pass
