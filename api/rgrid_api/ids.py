"""Short, URL-safe ids; users type unique prefixes of them. Batch ids begin
with "b-", which no execution id can, so one argument names either."""

from __future__ import annotations

import secrets

from rgrid.wire import BATCH_ID_PREFIX

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, no i/l/o/u
ID_LENGTH = 10


def new_execution_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))


BATCH_PREFIX = BATCH_ID_PREFIX
BATCH_ID_LENGTH = len(BATCH_PREFIX) + 8


def new_batch_id() -> str:
    return BATCH_PREFIX + "".join(
        secrets.choice(_ALPHABET) for _ in range(BATCH_ID_LENGTH - len(BATCH_PREFIX))
    )
