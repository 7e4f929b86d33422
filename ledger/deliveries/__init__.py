"""Delivering what happens to the merchant's systems: callbacks, webhooks and the change feed."""
