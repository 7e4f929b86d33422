"""What each role may do: one permission per RPC, one set of permissions per role.

This module is the whole access policy. The interceptor looks the called method up in
`RPC_PERMISSIONS` and refuses a caller whose roles do not grant that permission; a method
missing from the table is refused to everyone, so a new RPC is closed until it is listed
here (a test checks that every method of every `ledger.v1` service is). README.md shows the
same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Role(StrEnum):
    CASHIER = "cashier"
    MANAGER = "manager"
    AUDITOR = "auditor"
    INTEGRATION = "integration"


class Permission(StrEnum):
    SALES_READ = "sales.read"
    SALES_WRITE = "sales.write"  # open sales, change their lines and customer
    PAYMENTS_WRITE = "payments.write"  # request payments, record results, cancel them
    REFUNDS_WRITE = "refunds.write"
    SALES_VOID = "sales.void"
    SALES_IMPORT = "sales.import"
    CATALOG_READ = "catalog.read"
    CATALOG_WRITE = "catalog.write"  # products and their prices
    CUSTOMERS_READ = "customers.read"
    CUSTOMERS_WRITE = "customers.write"
    STOCK_READ = "stock.read"
    STOCK_WRITE = "stock.write"  # receive, adjust, count, transfer
    AUDIT_READ = "audit.read"
    WEBHOOKS_MANAGE = "webhooks.manage"  # endpoints, signing secrets, deliveries
    CHANGES_READ = "changes.read"  # the change feed


P = Permission

_READS = frozenset({P.SALES_READ, P.CATALOG_READ, P.CUSTOMERS_READ, P.STOCK_READ})
_CASHIER = _READS | {P.SALES_WRITE, P.PAYMENTS_WRITE, P.CUSTOMERS_WRITE}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # A till: sells, takes payments, signs up customers, reads its merchant's data.
    Role.CASHIER: _CASHIER,
    # A shift or store manager: also refunds, voids, prices, stock and imports.
    Role.MANAGER: _CASHIER
    | {
        P.REFUNDS_WRITE,
        P.SALES_VOID,
        P.CATALOG_WRITE,
        P.STOCK_WRITE,
        P.SALES_IMPORT,
        P.WEBHOOKS_MANAGE,
    },
    # Books and compliance: the audit RPCs and the query RPCs, no writes at all.
    Role.AUDITOR: _READS | {P.AUDIT_READ},
    # A web shop or CRM: keeps catalog, stock and customers in sync, imports its orders.
    # Its webhooks and the change feed are how it hears what happened.
    Role.INTEGRATION: _READS
    | {
        P.CATALOG_WRITE,
        P.STOCK_WRITE,
        P.CUSTOMERS_WRITE,
        P.SALES_IMPORT,
        P.WEBHOOKS_MANAGE,
        P.CHANGES_READ,
    },
}

# Development mode (no keys at all, see ledger/keys.py) may do everything.
ALL_PERMISSIONS = frozenset(Permission)

RPC_PERMISSIONS: dict[str, Permission] = {
    "/ledger.v1.SalesService/CreateSale": P.SALES_WRITE,
    "/ledger.v1.SalesService/AddLineItem": P.SALES_WRITE,
    "/ledger.v1.SalesService/RemoveLineItem": P.SALES_WRITE,
    "/ledger.v1.SalesService/AttachCustomer": P.SALES_WRITE,
    "/ledger.v1.SalesService/RequestPayment": P.PAYMENTS_WRITE,
    "/ledger.v1.SalesService/RecordPaymentResult": P.PAYMENTS_WRITE,
    "/ledger.v1.SalesService/CancelPayment": P.PAYMENTS_WRITE,
    "/ledger.v1.SalesService/RefundPayment": P.REFUNDS_WRITE,
    "/ledger.v1.SalesService/CancelSale": P.SALES_VOID,
    "/ledger.v1.SalesService/GetSale": P.SALES_READ,
    "/ledger.v1.SalesService/ImportSales": P.SALES_IMPORT,
    "/ledger.v1.SalesService/ListSales": P.SALES_READ,
    "/ledger.v1.SalesService/GetPayment": P.SALES_READ,
    "/ledger.v1.SalesService/FindPayments": P.SALES_READ,
    "/ledger.v1.CatalogService/CreateProduct": P.CATALOG_WRITE,
    "/ledger.v1.CatalogService/UpdateProduct": P.CATALOG_WRITE,
    "/ledger.v1.CatalogService/DiscontinueProduct": P.CATALOG_WRITE,
    "/ledger.v1.CatalogService/ReactivateProduct": P.CATALOG_WRITE,
    "/ledger.v1.CatalogService/GetProduct": P.CATALOG_READ,
    "/ledger.v1.CatalogService/ListProducts": P.CATALOG_READ,
    "/ledger.v1.CustomerService/CreateCustomer": P.CUSTOMERS_WRITE,
    "/ledger.v1.CustomerService/UpdateCustomer": P.CUSTOMERS_WRITE,
    "/ledger.v1.CustomerService/GetCustomer": P.CUSTOMERS_READ,
    "/ledger.v1.CustomerService/ListCustomers": P.CUSTOMERS_READ,
    "/ledger.v1.CustomerService/GetCustomerSummary": P.CUSTOMERS_READ,
    "/ledger.v1.InventoryService/ReceiveStock": P.STOCK_WRITE,
    "/ledger.v1.InventoryService/AdjustStock": P.STOCK_WRITE,
    "/ledger.v1.InventoryService/RecordStockCount": P.STOCK_WRITE,
    "/ledger.v1.InventoryService/TransferStock": P.STOCK_WRITE,
    "/ledger.v1.InventoryService/GetStockItem": P.STOCK_READ,
    "/ledger.v1.InventoryService/ListStockLevels": P.STOCK_READ,
    "/ledger.v1.InventoryService/GetStockLevel": P.STOCK_READ,
    "/ledger.v1.InventoryService/ListStockMovements": P.STOCK_READ,
    "/ledger.v1.AuditService/GetHistory": P.AUDIT_READ,
    "/ledger.v1.AuditService/GetSaleAt": P.AUDIT_READ,
    "/ledger.v1.AuditService/StreamEvents": P.AUDIT_READ,
    "/ledger.v1.AuditService/VerifyLog": P.AUDIT_READ,
    **{
        f"/ledger.v1.WebhookService/{name}": P.WEBHOOKS_MANAGE
        for name in (
            "CreateWebhook",
            "ListWebhooks",
            "UpdateWebhook",
            "DeleteWebhook",
            "RotateWebhookSecret",
            "RotateCallbackSecret",
            "ListDeliveries",
            "Redeliver",
        )
    },
    "/ledger.v1.ChangeFeedService/StreamChanges": P.CHANGES_READ,
}


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """Everything any of `roles` grants (a key may carry several roles)."""
    granted: frozenset[Permission] = frozenset()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return granted


def required_permission(method: str) -> Permission | None:
    """The permission `method` (`/ledger.v1.Service/Method`) needs; None: nobody may call it."""
    return RPC_PERMISSIONS.get(method)
