"""Wire messages ⇄ domain commands and state, one module per service. No rules here.

Each servicer parses its request with its service's module, calls the ledger, and builds
its response with the same module; what several services share is in `shared`. An enum
value the domain does not know (UNSPECIFIED, or a number from a newer client) becomes
None, which command validation reports as a field violation.
"""
