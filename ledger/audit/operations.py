"""What the `posledger audit` commands do: take a signed checkpoint, verify the log."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit.chain import Anchor
from ledger.audit.checkpoint import Checkpoint, sign
from ledger.audit.store import ChainKeeper, Progress, VerifyReport

MAX_ANCHORS = 256  # per checkpoint: about 20 kB of JSON


def take_checkpoint(
    keeper: ChainKeeper,
    key: Ed25519PrivateKey,
    *,
    max_anchors: int = MAX_ANCHORS,
    progress: Progress | None = None,
) -> tuple[Checkpoint | None, VerifyReport]:
    """Extends the chain, verifies it, and signs what the events themselves give.

    The digests signed are the ones recomputed from the events, never just the stored
    ones, and nothing is signed when the log was tampered with (the report says where).
    """
    keeper.extend()
    chained = keeper.head().events
    every = -(-chained // max_anchors) if chained else 0
    report = keeper.verify(sample_every=every, progress=progress)
    if report.finding is not None:
        return None, report
    anchors = [a for a in report.samples if a.position < report.position]
    anchors.append(Anchor(report.position, report.digest))
    checkpoint = sign(
        key,
        schema=keeper.schema,
        position=report.position,
        digest=report.digest,
        events=report.events,
        anchors=tuple(anchors),
    )
    return checkpoint, report


def verify_log(
    keeper: ChainKeeper, checkpoint: Checkpoint | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Recomputes the chain from the events; compares with the stored chain and, if
    given, with a (signature-checked) checkpoint. Writes nothing."""
    if checkpoint is None:
        return keeper.verify(progress=progress)
    return keeper.verify(checkpoint.all_anchors(), through=checkpoint.position, progress=progress)
