"""Sale commands: line items priced from the catalog, payments, refunds, and their stock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ledger.application.base import LedgerBase
from ledger.application.context import Context, Decision, Outcome
from ledger.domain import commands as c
from ledger.domain.customer import Customer
from ledger.domain.errors import FieldViolation, NotFound, RuleViolated
from ledger.domain.inventory import StockItem, stock_item_id
from ledger.domain.product import Product, product_id
from ledger.domain.sale import Sale
from ledger.keys import PermissionDenied


def bound_app_id(ctx: Context, requested: str) -> str:
    """The app a payment is filed under: the caller's key's app, never another one.

    Empty in the request means the key's app. Without a key (development mode, or the
    ledger used in process) a named app stands, as there is nothing to bind it to.
    """
    if ctx.key_id and requested and requested != ctx.app_id:
        raise PermissionDenied(
            f"this API key belongs to app {ctx.app_id!r} and cannot act as another app",
            reason="APP_ID_MISMATCH",
            metadata={"app_id": ctx.app_id},
        )
    return requested or ctx.app_id


@dataclass(frozen=True)
class SaleResult:
    """A sale as a command left it, with the ids the command created."""

    sale: Sale
    ids: dict[str, str] = field(default_factory=dict)
    replayed: bool = False
    position: int = 0

    @classmethod
    def of(cls, outcome: Outcome) -> SaleResult:
        return cls(
            sale=outcome.aggregate,
            ids=outcome.ids,
            replayed=outcome.replayed,
            position=outcome.position,
        )


class SalesCommands(LedgerBase):
    def create_sale(self, ctx: Context, cmd: c.CreateSale) -> SaleResult:
        c.validate(cmd)

        def decide() -> Decision:
            assert cmd.channel is not None
            if cmd.customer_id:
                self._customer(ctx.merchant_id, cmd.customer_id)
            lines = self._price_lines(ctx.merchant_id, cmd.currency_code, cmd.line_items)
            sale = Sale.create(
                merchant_id=ctx.merchant_id,
                location_id=cmd.location_id,
                channel=cmd.channel,
                currency_code=cmd.currency_code,
                line_items=lines,
                customer_id=cmd.customer_id,
                external_order_id=cmd.external_order_id,
                note=cmd.note,
            )
            return [sale], {}

        return SaleResult.of(self._execute(ctx, cmd, decide))

    def add_line_item(self, ctx: Context, cmd: c.AddLineItem) -> SaleResult:
        def act(sale: Sale) -> dict[str, str]:
            assert cmd.line_item is not None
            (line,) = self._price_lines(sale.merchant_id, sale.currency_code, (cmd.line_item,))
            return {"line_id": sale.add_line_item(line)}

        return self._on_sale(ctx, cmd, act)

    def remove_line_item(self, ctx: Context, cmd: c.RemoveLineItem) -> SaleResult:
        return self._on_sale(ctx, cmd, lambda sale: sale.remove_line_item(cmd.line_id))

    def attach_customer(self, ctx: Context, cmd: c.AttachCustomer) -> SaleResult:
        def act(sale: Sale) -> None:
            self._customer(sale.merchant_id, cmd.customer_id)
            sale.attach_customer(cmd.customer_id)

        return self._on_sale(ctx, cmd, act)

    def request_payment(self, ctx: Context, cmd: c.RequestPayment) -> SaleResult:
        cmd = replace(cmd, app_id=bound_app_id(ctx, cmd.app_id))
        settings = self.settings
        c.check_expires_after(
            cmd.expires_after, timedelta(seconds=settings.payment_max_expires_after_seconds)
        )
        expires_after = cmd.expires_after or timedelta(
            seconds=settings.payment_expires_after_seconds
        )

        def act(sale: Sale) -> dict[str, str]:
            payment_id = sale.request_payment(
                amount=cmd.amount,
                currency_code=cmd.currency_code,
                tender_types=[t for t in cmd.tender_types if t is not None],
                callback_url=cmd.callback_url,
                app_id=cmd.app_id,
                api_version=cmd.api_version,
                note=cmd.note,
                state=cmd.state,
                expires_after=expires_after,
            )
            return {"payment_id": payment_id}

        return self._on_sale(ctx, cmd, act)

    def record_payment_result(self, ctx: Context, cmd: c.RecordPaymentResult) -> SaleResult:
        def act(sale: Sale) -> dict[str, str]:
            sale.record_payment_result(cmd)
            return {"payment_id": cmd.payment_id}

        return self._on_sale(ctx, cmd, act)

    def cancel_payment(self, ctx: Context, cmd: c.CancelPayment) -> SaleResult:
        def act(sale: Sale) -> dict[str, str]:
            sale.cancel_payment(cmd.payment_id, cmd.reason)
            return {"payment_id": cmd.payment_id}

        return self._on_sale(ctx, cmd, act)

    def expire_payment(
        self, ctx: Context, cmd: c.ExpirePayment, now: datetime | None = None
    ) -> SaleResult:
        """Ends a payment pending past its deadline (judged at `now`, the current time
        unless given), releasing what its sale held for it.

        Run by the expiry worker with the request id `expire_request_id(payment_id)`, so
        workers that race, or a retry, record one expiry."""

        def act(sale: Sale) -> dict[str, str]:
            sale.expire_payment(cmd.payment_id, now or datetime.now(UTC))
            return {"payment_id": cmd.payment_id}

        return self._on_sale(ctx, cmd, act)

    def refund_payment(self, ctx: Context, cmd: c.RefundPayment) -> SaleResult:
        def act(sale: Sale) -> dict[str, str]:
            refund_id = sale.refund_payment(
                cmd.payment_id, cmd.amount, cmd.reason, cmd.processor_reference, cmd.restock_items
            )
            return {"refund_id": refund_id}

        return self._on_sale(ctx, cmd, act)

    def cancel_sale(self, ctx: Context, cmd: c.CancelSale) -> SaleResult:
        return self._on_sale(ctx, cmd, lambda sale: sale.cancel(cmd.reason))

    def get_sale(self, merchant_id: str, sale_id: str, version: int | None = None) -> Sale:
        """The sale now, or as it was at `version` (a version it never had is NOT_FOUND)."""
        c.check_sale_id(sale_id)
        sale = self._load(Sale, merchant_id, sale_id, "SALE_NOT_FOUND", version)
        if version is not None and sale.version != version:
            raise NotFound(f"sale {sale_id} has no version {version}", reason="VERSION_NOT_FOUND")
        return sale

    def get_sale_at(self, merchant_id: str, sale_id: str, moment: datetime) -> Sale:
        """The sale as it was at `moment`: after its last event recorded then or before."""
        sale = self.get_sale(merchant_id, sale_id)  # NOT_FOUND if missing or foreign
        version = self.sale_version_at(sale.id, moment)
        if version == 0:
            raise NotFound(
                f"sale {sale_id} did not exist yet at {moment.isoformat()}",
                reason="SALE_NOT_FOUND",
            )
        return self.get_sale(merchant_id, sale_id, version)

    def sale_version_at(self, sale_id: UUID, moment: datetime) -> int:
        """The version of the sale's last event recorded at or before `moment` (0: none).

        Tenancy is the caller's to check. A sale has few events: reading them all is cheap.
        """
        version = 0
        for event in self.events.get(sale_id):
            assert isinstance(event, Sale.Event)  # the Created event is one too
            if event.timestamp > moment:
                break
            version = event.originator_version
        return version

    # ---- helpers --------------------------------------------------------------------------

    def _customer(self, merchant_id: str, customer_id: str) -> Customer:
        """The sale's customer, which must exist for the merchant (read inside `decide`)."""
        return self._load(Customer, merchant_id, customer_id, "CUSTOMER_NOT_FOUND")

    def _on_sale(
        self, ctx: Context, cmd: c.SaleCommand, act: Callable[[Sale], dict[str, str] | None]
    ) -> SaleResult:
        """Runs a command on an existing sale (`cmd.sale_id`), with its stock effects."""
        c.validate(cmd)
        sale_id: str = getattr(cmd, "sale_id")  # noqa: B009  (every such command has one)

        def decide() -> Decision:
            sale = self._load(Sale, ctx.merchant_id, sale_id, "SALE_NOT_FOUND")
            self._check_version(ctx, sale)
            held = sale.reservation()
            ids = act(sale) or {}
            return [sale, *self._stock_effects(sale, {}, held)], ids

        return SaleResult.of(
            self._execute(ctx, cmd, decide, lambda: self._sale_and_stock(ctx, sale_id))
        )

    def _sale_and_stock(self, ctx: Context, sale_id: str) -> frozenset[UUID]:
        """What a command on the sale may write: the sale and its product lines' stock
        items, as this process last saw the sale (nothing if it has not seen it)."""
        try:
            cached = self.command_cache.get(UUID(sale_id))
        except ValueError:
            return frozenset()
        sale = None if cached is None else cached.aggregate
        if not isinstance(sale, Sale) or sale.merchant_id != ctx.merchant_id:
            return frozenset()
        stock = {
            stock_item_id(sale.merchant_id, line.product_id, sale.location_id)
            for line in sale.line_items
            if line.product_id
        }
        return frozenset({sale.id, *stock})

    def _price_lines(
        self,
        merchant_id: str,
        currency_code: str,
        items: tuple[c.LineItemInput, ...],
        products: dict[str, Product | None] | None = None,
    ) -> tuple[c.LineItemInput, ...]:
        """Links lines to catalog products by sku, taking price and tax rate from them.

        A sku the catalog does not have is an open item and must carry its own price.
        `products` caches catalog look-ups across the orders of an import.
        """
        products = {} if products is None else products
        priced = []
        for item in items:
            if item.sku not in products:
                key = product_id(merchant_id, item.sku)
                products[item.sku] = self._find(Product, merchant_id, key, copy=False)
            product = products[item.sku]
            if product is None:
                if item.unit_price is None:
                    raise RuleViolated(
                        f"sku {item.sku!r} is not in the catalog; give the line a unit_price "
                        "to sell it as an open item",
                        reason="UNKNOWN_SKU",
                    )
                priced.append(item if item.name else replace(item, name=item.sku))
                continue
            product.check_active()
            if item.unit_price is None and product.currency_code != currency_code:
                raise RuleViolated(
                    f"sku {item.sku!r} is priced in {product.currency_code}, "
                    f"the sale in {currency_code}",
                    reason="CURRENCY_MISMATCH",
                )
            if item.unit_price is None and item.discount > item.quantity * product.price:
                # Validation checks a discount against the line's own price only; a catalog
                # price is known here, and a larger discount would make the line negative.
                raise RuleViolated(
                    f"discount {item.discount} exceeds the line amount at the catalog price "
                    f"({item.quantity} x {product.price})",
                    reason="DISCOUNT_EXCEEDS_LINE",
                )
            priced.append(
                replace(
                    item,
                    unit_price=product.price if item.unit_price is None else item.unit_price,
                    tax_rate_ppm=(
                        product.tax_rate_ppm if item.tax_rate_ppm is None else item.tax_rate_ppm
                    ),
                    product_id=str(product.id),
                    name=item.name or product.name,
                )
            )
        return tuple(priced)

    def _stock_effects(
        self, sale: Sale, stock: dict[UUID, StockItem], held: Counter[str] | None = None
    ) -> list[StockItem]:
        """Stock items moved by the sale's new events: reserved while it holds stock (see
        `Sale.holds_stock`), released when it stops, sold on completion, returned on refund.

        `held` is what the sale held before these events; `stock` caches stock items across
        sales saved together (an import batch). Stock items are only read when something
        moves, so a busy item is not in the read set of commands that leave it alone.
        """
        held = held or Counter()
        moved: list[UUID] = []

        def item(product: str) -> StockItem:
            key = stock_item_id(sale.merchant_id, product, sale.location_id)
            if key not in stock:
                found = self._find(StockItem, sale.merchant_id, key)
                stock[key] = found or StockItem.open(sale.merchant_id, product, sale.location_id)
            if key not in moved:
                moved.append(key)
            return stock[key]

        events = list(sale.pending_events)
        completed = any(isinstance(e, Sale.Completed) for e in events)
        if completed:
            sold = Counter[str]()
            for line in sale.line_items:
                if line.product_id:
                    sold[line.product_id] += line.quantity
            for product, quantity in sold.items():
                item(product).record_sale(str(sale.id), quantity)
            for product in held.keys() - sold.keys():  # a removed line's units
                item(product).release(str(sale.id), held[product], "line_removed")
        else:
            self._reconcile_reservation(sale, held, item)
        for event in events:
            if isinstance(event, Sale.PaymentRefunded):
                for restocked in event.restock_items:
                    item(restocked["product_id"]).record_return(
                        str(sale.id), event.refund_id, restocked["quantity"]
                    )
        return [stock[key] for key in moved]

    def _reconcile_reservation(
        self, sale: Sale, held: Counter[str], item: Callable[[str], StockItem]
    ) -> None:
        """Reserves or releases the difference between what the sale wants and what its
        stock items hold for it. Short lines refuse the command unless it may oversell."""
        wanted = sale.reservation()
        if wanted == held:
            return
        sale_id = str(sale.id)
        violations: list[FieldViolation] = []
        for product in sorted(wanted.keys() | held.keys()):
            stock = item(product)
            change = wanted[product] - stock.reserved_for(sale_id)
            if change < 0:
                stock.release(sale_id, -change, release_reason(sale))
            elif change > 0 and not sale.may_oversell and stock.shortfall(change):
                violations.extend(
                    FieldViolation(
                        f"line_items[{n}]",
                        f"product {product} has {max(stock.available, 0)} units available at "
                        f"{sale.location_id}; the sale needs {change} more",
                        "INSUFFICIENT_STOCK",
                    )
                    for n, line in enumerate(sale.line_items)
                    if line.product_id == product
                )
            elif change > 0:
                short = stock.reserve(sale_id, change, may_oversell=sale.may_oversell)
                if short:
                    sale.record_oversold(product, short)
        if violations:
            raise RuleViolated(
                f"not enough stock at {sale.location_id} for a {sale.channel.value} sale",
                reason="INSUFFICIENT_STOCK",
                violations=violations,
            )


# Request ids the ledger gives its own expiries; a client's request may not use them, or it
# could take the id of an expiry that has yet to run.
EXPIRE_PREFIX = "expire:"


def expire_request_id(payment_id: str) -> str:
    """The request id of a payment's expiry: one per payment, whoever runs it."""
    return f"{EXPIRE_PREFIX}{payment_id}"


def release_reason(sale: Sale) -> str:
    """Why a sale stops holding (some of) its stock, from its latest event."""
    latest = sale.pending_events[-1] if sale.pending_events else None
    if isinstance(latest, Sale.Canceled):
        return "sale_canceled"
    if isinstance(latest, Sale.LineItemRemoved):
        return "line_removed"
    if isinstance(latest, Sale.PaymentExpired):
        return "payment_expired"
    return "payments_ended"
