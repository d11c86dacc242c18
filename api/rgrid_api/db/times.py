"""Datetimes as the control plane stores them, and as the database hands them back."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The time the control plane stores: aware, in UTC."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
