"""Three small interceptors around every `ledger.v1` RPC, outermost first:

- `call_log.CallLog`: one JSON line and the metrics per call; binds the method, merchant and
  request id to every line logged while the call is served;
- `error_mapping.ErrorMapping`: domain and store errors become google.rpc statuses; anything
  else is a bug, logged with its traceback and answered INTERNAL;
- `admission.Admission`: the store gate, authentication, the permission the RPC needs, card
  data in any field or header, undecodable bytes; it makes the caller known to servicers
  (`current_principal`, `current_device_id`).

Health and reflection pass untouched (load balancers and generic clients use them without a
key). Handlers of every kind are wrapped, so a new streaming RPC cannot slip past the checks.
"""

from __future__ import annotations

import grpc

from ledger.grpc.interceptors.admission import Admission, current_device_id, current_principal
from ledger.grpc.interceptors.call_log import CallLog
from ledger.grpc.interceptors.error_mapping import ErrorMapping
from ledger.keys import Authenticator
from ledger.store import StoreGate

__all__ = ["current_device_id", "current_principal", "ledger_interceptors"]


def ledger_interceptors(
    authenticator: Authenticator, gate: StoreGate | None = None
) -> list[grpc.ServerInterceptor]:  # type: ignore[type-arg]
    """In the order gRPC runs them: the first sees each call first and last."""
    return [CallLog(), ErrorMapping(), Admission(authenticator, gate)]
