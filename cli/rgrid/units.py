"""Parsing the human units of --memory, --timeout and --since."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from rgrid.errors import UsageError
from rgrid.wire import Resources

_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?\s*$", re.I)
_MEM_FACTOR_MB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_DUR_FACTOR_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_memory_mb(text: str) -> int:
    """'512M', '2G', '2GiB' or a plain number of MiB."""
    m = _MEM.match(text)
    if not m:
        raise UsageError(f"invalid --memory {text!r}: use e.g. 512M or 2G")
    unit = (m.group(2) or "m")[0].lower()
    return max(1, int(float(m.group(1)) * _MEM_FACTOR_MB[unit]))


def memory_flag(memory_mb: int) -> str:
    """A size as --memory takes it, in whole GiB where it is one."""
    return f"{memory_mb // 1024}G" if memory_mb % 1024 == 0 else f"{memory_mb}M"


def parse_duration_s(text: str) -> float:
    """'90', '90s', '5m', '2h' (seconds when no unit is given)."""
    m = _DUR.match(text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"invalid --timeout {text!r}: use e.g. 90s, 5m or 2h")
    return float(m.group(1)) * _DUR_FACTOR_S[(m.group(2) or "s").lower()]


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"invalid --env {pair!r}: use NAME=value")
        env[key] = value
    return env


def job_resources(cpu: float, memory: str, timeout: str) -> Resources:
    """--cpu, --memory and --timeout as the wire contract takes them. A
    value outside its range is the user's mistake: a usage error (exit 2)
    naming the option, never a validation traceback."""
    from pydantic import ValidationError

    try:
        return Resources(cpu=cpu, memory_mb=parse_memory_mb(memory), timeout_s=parse_duration_s(timeout))
    except ValidationError as exc:
        error = exc.errors()[0]
        option, given, unit = {
            "cpu": ("--cpu", f"{cpu:g}", ""),
            "memory_mb": ("--memory", memory, " (MiB)"),
            "timeout_s": ("--timeout", timeout, " (seconds)"),
        }[str(error["loc"][0])]
        raise UsageError(f"invalid {option} {given!r}: {error['msg'].lower()}{unit}") from None


def parse_since(value: str) -> datetime:
    """`30m`, `24h`, `7d` back from now, or an ISO date or time (UTC
    unless it names its offset); a ValueError that says so otherwise."""
    m = re.fullmatch(r"(\d+)\s*([mhd])", value.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        try:
            return datetime.now(UTC) - timedelta(**{unit: int(m[1])})
        except OverflowError:
            raise ValueError(f"reaches back before the year 1, in {value!r}") from None
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"takes 30m, 24h, 7d or an ISO date, not {value!r}") from None
    except OverflowError:
        raise ValueError(f"is out of the calendar's range: {value!r}") from None
