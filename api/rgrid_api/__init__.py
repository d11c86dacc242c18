"""The control plane: routes, loops and the helpers they share.

One rule for transactions. A helper that is handed a session never commits
nor rolls back: its caller owns the transaction. The callers are the routes
(handed their session by the request) and the code that opens one from a
sessionmaker: the loops (dispatcher, monitor, autoscaler, heartbeat
writer), the commands, and a step that must commit between outside effects
(the upload sweep commits a row's delete before its bytes go).

What others are told waits for the commit: the change feed
(`giveback.GivenBack.tell`, `ChangeFeed.changed`) and, where a helper
returns them, the Ray tasks to cancel. A refusal that still changed
something is returned, not raised (`attempts.NotStarted`), so that its
caller commits it; an insert that may race is made in a savepoint
(`uploads.plan_uploads`, `credentials.join`), so that the caller's
transaction goes on. `tests/api/test_transactions.py` holds every module
but the routes' to the first rule.
"""
