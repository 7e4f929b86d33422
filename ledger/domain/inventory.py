"""The StockItem aggregate: stock of one product at one location, from its own movements.

Its id derives from (merchant, product, location), so the first movement creates it and
every later one finds it. Sales never wait for stock: a completed sale records the units
sold here in the same transaction, and on-hand may go negative, which a count or an
adjustment later explains. Only a transfer refuses to move units a location does not have.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import singledispatchmethod

from eventsourcing.domain import Aggregate

from ledger.domain.copying import CheapCopy
from ledger.domain.errors import RuleViolated
from ledger.domain.handlers import apply_when
from ledger.domain.validation import Checks

STOCK_NAMESPACE = uuid.UUID("b4e0c7d2-9a31-4f7e-8d25-6a1c3e5b7f90")
MAX_UNITS = 1_000_000_000


class AdjustmentReason(StrEnum):
    DAMAGE = "damage"
    THEFT = "theft"
    LOSS = "loss"
    CORRECTION = "correction"
    RETURN_TO_STOCK = "return_to_stock"
    OTHER = "other"


def stock_item_id(merchant_id: str, product_id: str, location_id: str) -> uuid.UUID:
    return uuid.uuid5(STOCK_NAMESPACE, f"{merchant_id}\x1f{product_id}\x1f{location_id}")


@dataclass(frozen=True)
class ReceiveStock:
    product_id: str
    location_id: str
    quantity: int
    reference: str = ""
    note: str = ""


@dataclass(frozen=True)
class AdjustStock:
    product_id: str
    location_id: str
    quantity: int
    reason: AdjustmentReason | None
    note: str = ""


@dataclass(frozen=True)
class RecordStockCount:
    product_id: str
    location_id: str
    counted_quantity: int
    note: str = ""


@dataclass(frozen=True)
class TransferStock:
    product_id: str
    from_location_id: str
    to_location_id: str
    quantity: int
    reference: str = ""
    note: str = ""


StockCommand = ReceiveStock | AdjustStock | RecordStockCount | TransferStock


def validate_stock_command(command: StockCommand) -> None:
    checks = Checks()
    checks.uuid("product_id", command.product_id)
    match command:
        case ReceiveStock():
            checks.text("location_id", command.location_id, max_len=64, required=True)
            if not 1 <= command.quantity <= MAX_UNITS:
                checks.fail("quantity", f"must be between 1 and {MAX_UNITS}")
            checks.text("reference", command.reference, max_len=128)
        case AdjustStock():
            checks.text("location_id", command.location_id, max_len=64, required=True)
            if command.quantity == 0 or abs(command.quantity) > MAX_UNITS:
                checks.fail("quantity", f"must be non-zero and at most {MAX_UNITS} either way")
            checks.enum("reason", command.reason)
        case RecordStockCount():
            checks.text("location_id", command.location_id, max_len=64, required=True)
            if not 0 <= command.counted_quantity <= MAX_UNITS:
                checks.fail("counted_quantity", f"must be between 0 and {MAX_UNITS}")
        case TransferStock():
            checks.text("from_location_id", command.from_location_id, max_len=64, required=True)
            checks.text("to_location_id", command.to_location_id, max_len=64, required=True)
            if command.from_location_id and command.from_location_id == command.to_location_id:
                checks.fail("to_location_id", "must differ from from_location_id")
            if not 1 <= command.quantity <= MAX_UNITS:
                checks.fail("quantity", f"must be between 1 and {MAX_UNITS}")
            checks.text("reference", command.reference, max_len=128)
    checks.text("note", command.note, max_len=1000)
    checks.raise_if_any()


class StockItem(CheapCopy, Aggregate):
    TOPIC = "posledger.StockItem"

    class Event(Aggregate.Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, StockItem)
            apply_when(aggregate, self)

    class Created(Aggregate.Created):
        TOPIC = "posledger.StockItemCreated"
        merchant_id: str
        product_id: str
        location_id: str

    class Received(Event):
        TOPIC = "posledger.StockReceived"
        quantity: int
        reference: str
        note: str

    class Adjusted(Event):
        TOPIC = "posledger.StockAdjusted"
        quantity: int
        reason: str
        note: str

    class Counted(Event):
        TOPIC = "posledger.StockCounted"
        counted_quantity: int
        expected_quantity: int
        note: str

    class TransferredOut(Event):
        TOPIC = "posledger.StockTransferredOut"
        transfer_id: str
        quantity: int
        to_location_id: str
        reference: str
        note: str

    class TransferredIn(Event):
        TOPIC = "posledger.StockTransferredIn"
        transfer_id: str
        quantity: int
        from_location_id: str
        reference: str
        note: str

    class Sold(Event):
        TOPIC = "posledger.StockSold"
        sale_id: str
        quantity: int

    class Returned(Event):
        TOPIC = "posledger.StockReturned"
        sale_id: str
        refund_id: str
        quantity: int

    def __init__(self, merchant_id: str, product_id: str, location_id: str) -> None:
        self.merchant_id = merchant_id
        self.product_id = product_id
        self.location_id = location_id
        self.on_hand = 0
        self.received = 0
        self.sold = 0
        self.returned = 0
        self.adjusted = 0
        self.transferred_in = 0
        self.transferred_out = 0
        self.count_variance = 0
        self.last_count = 0
        self.last_count_variance = 0
        self.last_counted_at: datetime | None = None

    @classmethod
    def open(cls, merchant_id: str, product_id: str, location_id: str) -> StockItem:
        return cls._create(
            cls.Created,
            id=stock_item_id(merchant_id, product_id, location_id),
            merchant_id=merchant_id,
            product_id=product_id,
            location_id=location_id,
        )

    def receive(self, quantity: int, reference: str, note: str) -> None:
        self.trigger_event(self.Received, quantity=quantity, reference=reference, note=note)

    def adjust(self, quantity: int, reason: AdjustmentReason, note: str) -> None:
        self.trigger_event(self.Adjusted, quantity=quantity, reason=reason.value, note=note)

    def count(self, counted_quantity: int, note: str) -> None:
        self.trigger_event(
            self.Counted,
            counted_quantity=counted_quantity,
            expected_quantity=self.on_hand,
            note=note,
        )

    def transfer_out(
        self, transfer_id: str, quantity: int, to_location_id: str, ref: str, note: str = ""
    ) -> None:
        if quantity > self.on_hand:
            raise RuleViolated(
                f"only {self.on_hand} units on hand at {self.location_id}; cannot transfer "
                f"{quantity}",
                reason="INSUFFICIENT_STOCK",
            )
        self.trigger_event(
            self.TransferredOut,
            transfer_id=transfer_id,
            quantity=quantity,
            to_location_id=to_location_id,
            reference=ref,
            note=note,
        )

    def transfer_in(
        self, transfer_id: str, quantity: int, from_location_id: str, ref: str, note: str = ""
    ) -> None:
        self.trigger_event(
            self.TransferredIn,
            transfer_id=transfer_id,
            quantity=quantity,
            from_location_id=from_location_id,
            reference=ref,
            note=note,
        )

    def record_sale(self, sale_id: str, quantity: int) -> None:
        self.trigger_event(self.Sold, sale_id=sale_id, quantity=quantity)

    def record_return(self, sale_id: str, refund_id: str, quantity: int) -> None:
        self.trigger_event(self.Returned, sale_id=sale_id, refund_id=refund_id, quantity=quantity)

    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"StockItem cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass

    @when.register(Received)
    def _received(self, event: Received) -> None:
        self.received += event.quantity
        self.on_hand += event.quantity

    @when.register(Adjusted)
    def _adjusted(self, event: Adjusted) -> None:
        self.adjusted += event.quantity
        self.on_hand += event.quantity

    @when.register(Counted)
    def _counted(self, event: Counted) -> None:
        variance = event.counted_quantity - event.expected_quantity
        self.count_variance += variance
        self.last_count = event.counted_quantity
        self.last_count_variance = variance
        self.last_counted_at = event.timestamp
        self.on_hand = event.counted_quantity

    @when.register(TransferredOut)
    def _transferred_out(self, event: TransferredOut) -> None:
        self.transferred_out += event.quantity
        self.on_hand -= event.quantity

    @when.register(TransferredIn)
    def _transferred_in(self, event: TransferredIn) -> None:
        self.transferred_in += event.quantity
        self.on_hand += event.quantity

    @when.register(Sold)
    def _sold(self, event: Sold) -> None:
        self.sold += event.quantity
        self.on_hand -= event.quantity

    @when.register(Returned)
    def _returned(self, event: Returned) -> None:
        self.returned += event.quantity
        self.on_hand += event.quantity
