"""Short, URL-safe execution ids; users type unique prefixes of them."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, no i/l/o/u
ID_LENGTH = 10


def new_execution_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))
