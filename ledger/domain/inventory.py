"""The StockItem aggregate: stock of one product at one location, from its own movements.

Its id derives from (merchant, product, location), so the first movement creates it and
every later one finds it. A sale reserves its units here when its first payment is requested
and sells them on completion, in the same transaction as the sale's own events; `available`
is on-hand less what is reserved. Only an in-store sale may reserve more than is available
(the goods are in the customer's hand), so only in-store sales, counts and adjustments take
available or on-hand below zero. A transfer never moves units that are not available.

`StockLevel` is the arithmetic of every stock event, written once: the aggregate and the
inventory view both apply events through `StockLevel.move`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from functools import singledispatchmethod
from typing import Any

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


@dataclass(eq=False, repr=False)  # a StockItem is one too: its identity is its id
class StockLevel:
    """The counters of one stock item, as its events leave them."""

    on_hand: int = 0
    reserved: int = 0
    received: int = 0
    sold: int = 0
    returned: int = 0
    adjusted: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    count_variance: int = 0
    last_count: int = 0
    last_count_variance: int = 0
    last_counted_at: datetime | None = None

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @classmethod
    def of(cls, row: dict[str, Any]) -> StockLevel:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def move(self, e: Any) -> Movement:
        """Applies one stock event (not the creation); returns the movement it records."""
        match e:
            case StockItem.Received():
                self.received += e.quantity
                self.on_hand += e.quantity
                return Movement("received", e.quantity, reference=e.reference, note=e.note)
            case StockItem.Adjusted():
                self.adjusted += e.quantity
                self.on_hand += e.quantity
                return Movement("adjusted", e.quantity, reason=e.reason, note=e.note)
            case StockItem.Counted():
                variance = e.counted_quantity - e.expected_quantity
                self.count_variance += variance
                self.last_count = e.counted_quantity
                self.last_count_variance = variance
                self.last_counted_at = e.timestamp
                self.on_hand = e.counted_quantity
                return Movement("counted", variance, note=e.note)
            case StockItem.TransferredOut():
                self.transferred_out += e.quantity
                self.on_hand -= e.quantity
                return Movement(
                    "transferred_out",
                    -e.quantity,
                    reference=e.reference,
                    note=e.note,
                    other_location_id=e.to_location_id,
                )
            case StockItem.TransferredIn():
                self.transferred_in += e.quantity
                self.on_hand += e.quantity
                return Movement(
                    "transferred_in",
                    e.quantity,
                    reference=e.reference,
                    note=e.note,
                    other_location_id=e.from_location_id,
                )
            case StockItem.Sold():
                self.sold += e.quantity
                self.on_hand -= e.quantity
                return Movement("sold", -e.quantity, sale_id=e.sale_id)
            case StockItem.SoldFromReservation():
                self.sold += e.quantity
                self.on_hand -= e.quantity
                self.reserved -= e.released
                return Movement("sold", -e.quantity, sale_id=e.sale_id, reserved=-e.released)
            case StockItem.Returned():
                self.returned += e.quantity
                self.on_hand += e.quantity
                return Movement("returned", e.quantity, reference=e.refund_id, sale_id=e.sale_id)
            case StockItem.Reserved():
                self.reserved += e.quantity
                return Movement("reserved", 0, sale_id=e.sale_id, reserved=e.quantity)
            case StockItem.ReservationReleased():
                self.reserved -= e.quantity
                return Movement(
                    "reservation_released",
                    0,
                    reason=e.reason,
                    sale_id=e.sale_id,
                    reserved=-e.quantity,
                )
        raise AssertionError(f"not a stock movement: {type(e).__name__}")


@dataclass(frozen=True)
class Movement:
    """What one stock event did, as the inventory view lists it."""

    kind: str
    quantity: int  # effect on on-hand, signed (for a count: its variance)
    reason: str = ""
    reference: str = ""
    note: str = ""
    sale_id: str = ""
    other_location_id: str = ""
    reserved: int = 0  # effect on reserved, signed


class StockItem(CheapCopy, StockLevel, Aggregate):
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

    class Reserved(Event):
        """Units promised to an open sale; `short` of them were not available (in-store)."""

        TOPIC = "posledger.StockReserved"
        sale_id: str
        quantity: int
        short: int

    class ReservationReleased(Event):
        TOPIC = "posledger.StockReservationReleased"
        sale_id: str
        quantity: int
        reason: str

    class SoldFromReservation(Event):
        """A completed sale took its units, ending the reservation it held (`released`)."""

        TOPIC = "posledger.StockSoldFromReservation"
        sale_id: str
        quantity: int
        released: int

    def __init__(self, merchant_id: str, product_id: str, location_id: str) -> None:
        StockLevel.__init__(self)
        self.merchant_id = merchant_id
        self.product_id = product_id
        self.location_id = location_id
        # Units reserved per open sale (sale id -> units); `reserved` is their sum.
        self.reservations: dict[str, int] = {}

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
        if quantity > self.available:
            raise RuleViolated(
                f"only {max(self.available, 0)} units available at {self.location_id} "
                f"({self.on_hand} on hand, {self.reserved} reserved); cannot transfer {quantity}",
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

    def reserved_for(self, sale_id: str) -> int:
        return self.reservations.get(sale_id, 0)

    def shortfall(self, quantity: int) -> int:
        """How many of `quantity` more units are not available to reserve."""
        return max(0, quantity - max(self.available, 0))

    def reserve(self, sale_id: str, quantity: int, *, may_oversell: bool) -> int:
        """Reserves units for a sale; returns how many were short (only if it may oversell)."""
        short = self.shortfall(quantity)
        if short and not may_oversell:
            raise RuleViolated(
                f"only {max(self.available, 0)} units available at {self.location_id}; "
                f"cannot reserve {quantity}",
                reason="INSUFFICIENT_STOCK",
            )
        self.trigger_event(self.Reserved, sale_id=sale_id, quantity=quantity, short=short)
        return short

    def release(self, sale_id: str, quantity: int, reason: str) -> None:
        """Releases up to `quantity` of what the sale holds (never more than it holds)."""
        quantity = min(quantity, self.reserved_for(sale_id))
        if quantity > 0:
            self.trigger_event(
                self.ReservationReleased, sale_id=sale_id, quantity=quantity, reason=reason
            )

    def record_sale(self, sale_id: str, quantity: int) -> None:
        """Units sold; a reservation the sale holds here ends with it."""
        held = self.reserved_for(sale_id)
        if held:
            self.trigger_event(
                self.SoldFromReservation, sale_id=sale_id, quantity=quantity, released=held
            )
        else:
            self.trigger_event(self.Sold, sale_id=sale_id, quantity=quantity)

    def record_return(self, sale_id: str, refund_id: str, quantity: int) -> None:
        self.trigger_event(self.Returned, sale_id=sale_id, refund_id=refund_id, quantity=quantity)

    # Every event moves the counters through `StockLevel.move`; reservations are per sale.
    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"StockItem cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass

    @when.register(Received)
    @when.register(Adjusted)
    @when.register(Counted)
    @when.register(TransferredOut)
    @when.register(TransferredIn)
    @when.register(Sold)
    @when.register(Returned)
    def _moved(self, event: Aggregate.Event) -> None:
        self.move(event)

    @when.register(Reserved)
    def _reserved(self, event: Reserved) -> None:
        self.move(event)
        self.reservations[event.sale_id] = self.reserved_for(event.sale_id) + event.quantity

    @when.register(ReservationReleased)
    def _released(self, event: ReservationReleased) -> None:
        self.move(event)
        left = self.reserved_for(event.sale_id) - event.quantity
        if left > 0:
            self.reservations[event.sale_id] = left
        else:
            self.reservations.pop(event.sale_id, None)

    @when.register(SoldFromReservation)
    def _sold_from_reservation(self, event: SoldFromReservation) -> None:
        self.move(event)
        self.reservations.pop(event.sale_id, None)
