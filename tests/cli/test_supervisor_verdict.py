"""The local supervisor's restart decisions, driven by a fake clock and
fake health answers: when a piece runs on, when it is restarted and what
the restart is said to be for."""

from __future__ import annotations

from collections.abc import Callable

from rgrid.local.verdict import HEALTH_EVERY_S, START_TIMEOUT_S, UNHEALTHY_S, Watched, failure


class Piece:
    """A piece as the supervisor sees it: a clock, health answers, and
    whether what it needs is up; each look is one supervisor tick."""

    def __init__(self, kind: str = "api", adopted: bool = False) -> None:
        self.kind = kind
        self.now = 1000.0
        self.healthy = True
        self.needs = True
        self.checks = 0
        # Started by this supervisor: its start time; adopted from an earlier
        # one: no process handle and no start time yet.
        self.w = Watched(started=0.0 if adopted else self.now)

    def look(self, after_s: float = 0.5, exited: str | None = None) -> str | None:
        self.now += after_s

        def check() -> bool:
            self.checks += 1
            return self.healthy

        return failure(self.w, self.kind, exited, check, lambda: self.needs, self.now)

    def looks(self, seconds: float) -> list[str | None]:
        return [self.look() for _ in range(int(seconds / 0.5))]


def until(piece: Piece, done: Callable[[str | None], bool], limit_s: float = 600) -> tuple[str | None, float]:
    """Look every tick until `done`; what it said and when (s after the first look)."""
    start = piece.now
    while piece.now - start < limit_s:
        said = piece.look()
        if done(said):
            return said, piece.now - start
    raise AssertionError("never decided")


def test_a_healthy_piece_runs_on_and_is_asked_only_every_few_seconds() -> None:
    piece = Piece()
    assert piece.looks(60) == [None] * 120
    # Asked until healthy (the first look), then once per HEALTH_EVERY_S.
    assert piece.checks <= 1 + 60 / HEALTH_EVERY_S + 1


def test_an_exited_process_is_restarted_at_once_with_how_it_ended() -> None:
    piece = Piece()
    piece.look()
    assert piece.look(exited="killed by SIGKILL") == "killed by SIGKILL"


def test_a_piece_that_never_becomes_healthy_gets_its_start_timeout() -> None:
    piece = Piece(kind="ray")
    piece.healthy = False
    said, at = until(piece, lambda s: s is not None)
    assert said == f"not healthy {START_TIMEOUT_S['ray']:.0f} s after start"
    assert START_TIMEOUT_S["ray"] < at <= START_TIMEOUT_S["ray"] + 1


def test_a_piece_that_turns_unhealthy_is_restarted_after_unhealthy_s() -> None:
    piece = Piece()
    piece.looks(10)
    piece.healthy = False
    said, at = until(piece, lambda s: s is not None)
    assert said == f"unhealthy for {UNHEALTHY_S:.0f} s"
    # Noticed at its next health check (within HEALTH_EVERY_S), then blamed UNHEALTHY_S later.
    assert UNHEALTHY_S < at <= UNHEALTHY_S + HEALTH_EVERY_S + 1


def test_a_blip_shorter_than_unhealthy_s_is_forgiven() -> None:
    piece = Piece()
    piece.looks(10)
    piece.healthy = False
    assert set(piece.looks(UNHEALTHY_S - HEALTH_EVERY_S)) == {None}
    piece.healthy = True
    assert set(piece.looks(5)) == {None}
    piece.healthy = False
    said, at = until(piece, lambda s: s is not None)
    assert said == f"unhealthy for {UNHEALTHY_S:.0f} s"
    assert at > UNHEALTHY_S  # the clock started again with the new trouble


def test_a_piece_is_never_blamed_while_what_it_needs_is_down() -> None:
    piece = Piece()
    piece.looks(10)
    piece.healthy, piece.needs = False, False
    assert set(piece.looks(10 * UNHEALTHY_S)) == {None}
    piece.needs = True  # its dependency is back: it gets the whole UNHEALTHY_S from now
    said, at = until(piece, lambda s: s is not None)
    assert said == f"unhealthy for {UNHEALTHY_S:.0f} s" and at > UNHEALTHY_S


def test_an_adopted_piece_gets_the_start_timeout_from_when_it_was_adopted() -> None:
    piece = Piece(kind="api", adopted=True)
    piece.healthy = False
    said, at = until(piece, lambda s: s is not None)
    assert said == f"not healthy {START_TIMEOUT_S['api']:.0f} s after start"
    assert START_TIMEOUT_S["api"] < at <= START_TIMEOUT_S["api"] + 1
