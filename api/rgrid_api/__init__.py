"""The control plane: routes, loops and the helpers they share.

One rule for transactions. A helper that is handed a session never commits
nor rolls back: its caller owns the transaction. The callers are the routes
(handed their session by the request) and the code that opens one from a
sessionmaker: the loops (dispatcher, monitor, autoscaler, heartbeat
writer), the commands, and the steps that commit as they go (the upload
sweep commits a row's delete before its bytes go; `giveback.give_back`
gives each lost attempt back in a transaction of its own; completing an
upload reads its bytes between two short transactions). Such a step is
called once its caller's own transaction ended: on SQLite a writing
session holds the database's write lock.

Work whose amount a caller chooses (presigning a runner's files, asking
storage of each output) is done with no transaction open. One exception
is left: planning uploads starts a multipart upload (a storage call) for
each large object inside its transaction, as the row must name it; on
PostgreSQL that holds only the owner's own rows.

What others are told waits for the commit: the change feed
(`ChangeFeed.changed`, `work_queued`) and, where a helper returns them,
the Ray tasks to cancel. A refusal that still changed
something is returned, not raised (`attempts.NotStarted`), so that its
caller commits it; an insert that may race is made in a savepoint
(`uploads.plan_uploads`, `credentials.join`), so that the caller's
transaction goes on. `tests/api/test_transactions.py` holds every module
but the routes' to the first rule.
"""
