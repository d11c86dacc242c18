"""The control plane: routes, loops and the helpers they share.

One rule for transactions: a helper that takes a session never commits nor
rolls back. Its caller owns the transaction: a route, a loop (the
dispatcher, the monitor, the autoscaler, the heartbeat writer) or a
command. `tests/api/test_transactions.py` holds every other module to it.
"""
