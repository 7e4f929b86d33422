"""Customer commands: profiles, consent, and external ids unique per channel."""

from __future__ import annotations

from typing import Any

from ledger.application.base import LedgerBase
from ledger.application.context import Context, Decision, Outcome
from ledger.domain import customer as d
from ledger.domain.customer import Actor, Customer, ExternalId, ExternalIdClaim
from ledger.domain.validation import Checks


class CustomerCommands(LedgerBase):
    def create_customer(self, ctx: Context, cmd: d.CreateCustomer) -> Outcome:
        d.validate_customer_command(cmd)

        def decide() -> Decision:
            customer = Customer.create(ctx.merchant_id, cmd, Actor(ctx.app_id, ctx.key_id))
            claims = self._claim(ctx.merchant_id, str(customer.id), cmd.external_ids, ())
            return [customer, *claims], {}

        return self._execute(ctx, cmd, decide)

    def update_customer(self, ctx: Context, cmd: d.UpdateCustomer) -> Outcome:
        d.validate_customer_command(cmd)

        def decide() -> Decision:
            customer = self._load(Customer, ctx.merchant_id, cmd.customer_id, "CUSTOMER_NOT_FOUND")
            self._check_version(ctx, customer)
            changes = dict(cmd.changes)
            claims: list[ExternalIdClaim] = []
            if "external_ids" in changes:
                claims = self._claim(
                    ctx.merchant_id,
                    str(customer.id),
                    changes["external_ids"],
                    tuple(customer.external_ids),
                )
            customer.update(changes, cmd.consent_channel, Actor(ctx.app_id, ctx.key_id))
            return [customer, *claims], {}

        return self._execute(ctx, cmd, decide)

    def get_customer(self, merchant_id: str, customer_id: str) -> Customer:
        checks = Checks()
        checks.uuid("customer_id", customer_id)
        checks.raise_if_any()
        return self._load(Customer, merchant_id, customer_id, "CUSTOMER_NOT_FOUND")

    def _claim(
        self,
        merchant_id: str,
        customer_id: str,
        wanted: tuple[ExternalId, ...],
        held: tuple[ExternalId, ...],
    ) -> list[ExternalIdClaim]:
        """Claims the external ids the customer wants and releases those it gives up."""
        claims: list[Any] = []
        for external in wanted:
            if external in held:
                continue
            claim = self._find(
                ExternalIdClaim, merchant_id, d.external_id_claim_id(merchant_id, external)
            )
            if claim is None:
                claim = ExternalIdClaim.claim_new(merchant_id, external, customer_id)
            else:
                claim.claim(customer_id)
            claims.append(claim)
        for external in held:
            if external not in wanted:
                claim = self._find(
                    ExternalIdClaim, merchant_id, d.external_id_claim_id(merchant_id, external)
                )
                if claim is not None:
                    claim.release(customer_id)
                    claims.append(claim)
        return claims
