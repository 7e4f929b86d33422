"""The Customer aggregate, and the claim that makes an external id unique per channel.

Customer records are personal data: only the fields below are kept, and errors never echo
an email or phone number. Marketing consent changes are events of their own, recording who
changed it (app and API key), when, and through which channel.

An external id (channel, id) is claimed by an ExternalIdClaim aggregate whose id derives from
(merchant, channel, external id), saved in the same transaction as the customer: two
customers can never hold the same external id, even when created at the same instant.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import singledispatchmethod
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.domain.commands import Channel
from ledger.domain.copying import CheapCopy
from ledger.domain.errors import AlreadyExists
from ledger.domain.handlers import apply_when
from ledger.domain.validation import Checks

EXTERNAL_ID_NAMESPACE = uuid.UUID("0d3f6f4e-8a6b-4c1e-b1a9-5b7e2d9c4f21")
UPDATABLE_FIELDS = ("name", "email", "phone", "marketing_consent", "tags", "external_ids")
MAX_TAGS = 20
MAX_EXTERNAL_IDS = 10
_EMAIL = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")  # E.164


@dataclass(frozen=True)
class ExternalId:
    channel: str
    external_id: str

    def to_event(self) -> dict[str, str]:
        return {"channel": self.channel, "external_id": self.external_id}


@dataclass(frozen=True)
class CreateCustomer:
    name: str
    email: str = ""
    phone: str = ""
    marketing_consent: bool = False
    consent_channel: Channel | None = None
    tags: tuple[str, ...] = ()
    external_ids: tuple[ExternalId, ...] = ()


@dataclass(frozen=True)
class UpdateCustomer:
    customer_id: str
    # Only the fields named by the update mask, by name.
    changes: tuple[tuple[str, Any], ...]
    consent_channel: Channel | None = None


def _check_fields(checks: Checks, fields: dict[str, Any], prefix: str = "") -> None:
    if "name" in fields:
        checks.text(f"{prefix}name", fields["name"], max_len=200, required=True)
    if fields.get("email"):
        email = fields["email"]
        if not checks.no_card_number(f"{prefix}email", email):
            pass
        elif len(email) > 254 or not _EMAIL.fullmatch(email):
            checks.fail(f"{prefix}email", "is not a valid email address")
    if fields.get("phone") and not checks.no_card_number(f"{prefix}phone", fields["phone"]):
        pass
    elif fields.get("phone") and not _PHONE.fullmatch(fields["phone"]):
        checks.fail(f"{prefix}phone", "must be in E.164 form, e.g. +4915112345678")
    tags = fields.get("tags", ())
    if len(tags) > MAX_TAGS:
        checks.fail(f"{prefix}tags", f"must have at most {MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        checks.text(f"{prefix}tags[{i}]", tag, max_len=50, required=True)
    external_ids = fields.get("external_ids", ())
    if len(external_ids) > MAX_EXTERNAL_IDS:
        checks.fail(f"{prefix}external_ids", f"must have at most {MAX_EXTERNAL_IDS} entries")
    for i, ext in enumerate(external_ids):
        checks.slug(f"{prefix}external_ids[{i}].channel", ext.channel)
        checks.text(
            f"{prefix}external_ids[{i}].external_id", ext.external_id, max_len=128, required=True
        )
    if len({(e.channel, e.external_id) for e in external_ids}) != len(external_ids):
        checks.fail(f"{prefix}external_ids", "must not repeat an external id")


def validate_customer_command(command: CreateCustomer | UpdateCustomer) -> None:
    checks = Checks()
    match command:
        case CreateCustomer():
            _check_fields(checks, vars(command))
            if command.marketing_consent:
                checks.enum("consent_channel", command.consent_channel)
        case UpdateCustomer():
            checks.uuid("customer_id", command.customer_id)
            checks.update_mask([name for name, _ in command.changes], UPDATABLE_FIELDS)
            fields = dict(command.changes)
            _check_fields(checks, fields, prefix="customer.")
            if "marketing_consent" in fields:
                checks.enum("consent_channel", command.consent_channel)
    checks.raise_if_any()


@dataclass(frozen=True)
class Actor:
    """Who made a change: the calling app and the id of its API key (never the key)."""

    app_id: str
    key_id: str


class Customer(CheapCopy, Aggregate):
    TOPIC = "posledger.Customer"

    class Event(Aggregate.Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Customer)
            apply_when(aggregate, self)

    class Created(Aggregate.Created):
        TOPIC = "posledger.CustomerCreated"
        merchant_id: str
        name: str
        email: str
        phone: str
        tags: list[str]
        external_ids: list[dict[str, str]]

    class Updated(Event):
        """Profile fields changed (never consent, which has events of its own)."""

        TOPIC = "posledger.CustomerUpdated"
        changes: dict[str, Any]

    class ConsentChanged(Event):
        TOPIC = "posledger.CustomerMarketingConsentChanged"
        marketing_consent: bool
        channel: str
        app_id: str
        key_id: str

    def __init__(
        self,
        merchant_id: str,
        name: str,
        email: str,
        phone: str,
        tags: list[str],
        external_ids: list[dict[str, str]],
    ) -> None:
        self.merchant_id = merchant_id
        self.name = name
        self.email = email
        self.phone = phone
        self.tags = list(tags)
        self.external_ids = [ExternalId(**e) for e in external_ids]
        self.marketing_consent = False
        self.consent_channel = ""
        self.consent_changed_at: Any = None

    @classmethod
    def create(cls, merchant_id: str, cmd: CreateCustomer, actor: Actor) -> Customer:
        customer = cls._create(
            cls.Created,
            id=uuid.uuid4(),
            merchant_id=merchant_id,
            name=cmd.name,
            email=cmd.email,
            phone=cmd.phone,
            tags=list(cmd.tags),
            external_ids=[e.to_event() for e in cmd.external_ids],
        )
        if cmd.marketing_consent:
            assert cmd.consent_channel is not None
            customer.change_consent(True, cmd.consent_channel, actor)
        return customer

    def update(
        self, changes: dict[str, Any], consent_channel: Channel | None, actor: Actor
    ) -> None:
        profile = {k: v for k, v in changes.items() if k != "marketing_consent"}
        if "tags" in profile:
            profile["tags"] = list(profile["tags"])
        if "external_ids" in profile:
            profile["external_ids"] = [e.to_event() for e in profile["external_ids"]]
        current = {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "tags": self.tags,
            "external_ids": [e.to_event() for e in self.external_ids],
        }
        changed = {k: v for k, v in profile.items() if current[k] != v}
        if changed:
            self.trigger_event(self.Updated, changes=changed)
        if "marketing_consent" in changes:
            assert consent_channel is not None
            self.change_consent(bool(changes["marketing_consent"]), consent_channel, actor)

    def change_consent(self, consent: bool, channel: Channel, actor: Actor) -> None:
        if consent != self.marketing_consent:
            self.trigger_event(
                self.ConsentChanged,
                marketing_consent=consent,
                channel=channel.value,
                app_id=actor.app_id,
                key_id=actor.key_id,
            )

    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"Customer cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass  # __init__ has applied it

    @when.register(Updated)
    def _updated(self, event: Updated) -> None:
        for name, value in event.changes.items():
            if name == "external_ids":
                self.external_ids = [ExternalId(**e) for e in value]
            else:
                setattr(self, name, value)

    @when.register(ConsentChanged)
    def _consent_changed(self, event: ConsentChanged) -> None:
        self.marketing_consent = event.marketing_consent
        self.consent_channel = event.channel
        self.consent_changed_at = event.timestamp


def external_id_claim_id(merchant_id: str, external: ExternalId) -> uuid.UUID:
    return uuid.uuid5(
        EXTERNAL_ID_NAMESPACE, f"{merchant_id}\x1f{external.channel}\x1f{external.external_id}"
    )


class ExternalIdClaim(CheapCopy, Aggregate):
    """Who holds one external id of one merchant on one channel."""

    TOPIC = "posledger.ExternalIdClaim"

    class Event(Aggregate.Event):
        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, ExternalIdClaim)
            apply_when(aggregate, self)

    class Created(Aggregate.Created):
        TOPIC = "posledger.ExternalIdClaimed"
        merchant_id: str
        channel: str
        external_id: str
        customer_id: str

    class Reassigned(Event):
        TOPIC = "posledger.ExternalIdReassigned"
        customer_id: str  # "" when released

    def __init__(self, merchant_id: str, channel: str, external_id: str, customer_id: str) -> None:
        self.merchant_id = merchant_id
        self.channel = channel
        self.external_id = external_id
        self.customer_id = customer_id

    @classmethod
    def claim_new(cls, merchant_id: str, external: ExternalId, customer_id: str) -> ExternalIdClaim:
        return cls._create(
            cls.Created,
            id=external_id_claim_id(merchant_id, external),
            merchant_id=merchant_id,
            channel=external.channel,
            external_id=external.external_id,
            customer_id=customer_id,
        )

    def claim(self, customer_id: str) -> None:
        if self.customer_id == customer_id:
            return
        if self.customer_id:
            raise AlreadyExists(
                f"external id {self.external_id!r} on channel {self.channel!r} "
                "belongs to another customer",
                reason="EXTERNAL_ID_TAKEN",
            )
        self.trigger_event(self.Reassigned, customer_id=customer_id)

    def release(self, customer_id: str) -> None:
        if self.customer_id == customer_id:
            self.trigger_event(self.Reassigned, customer_id="")

    @singledispatchmethod
    def when(self, event: Aggregate.Event) -> None:
        raise NotImplementedError(f"ExternalIdClaim cannot apply {type(event).__name__}")

    @when.register(Created)
    def _created(self, event: Created) -> None:
        pass

    @when.register(Reassigned)
    def _reassigned(self, event: Reassigned) -> None:
        self.customer_id = event.customer_id
