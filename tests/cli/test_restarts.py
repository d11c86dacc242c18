"""The one restart schedule every supervisor of the grid follows."""

from __future__ import annotations

from rgrid.restarts import MAX_PAUSE_S, RESET_AFTER_S, RestartPolicy, pause_before_restart


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_schedule_restarts_at_once_then_doubles_up_to_the_cap() -> None:
    pauses = [pause_before_restart(n) for n in range(1, 10)]
    assert pauses == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_PAUSE_S, MAX_PAUSE_S, MAX_PAUSE_S]


def test_policy_counts_crashes_in_a_row_and_forgives_a_long_run() -> None:
    clock = Clock()
    policy = RestartPolicy(clock=clock)
    policy.started()
    clock.now += 5
    assert policy.crashed() == 0.0 and policy.may_start()
    policy.started()
    clock.now += 5
    assert policy.crashed() == 1.0
    assert not policy.may_start() and policy.wait_s() == 1.0
    clock.now += 1
    assert policy.may_start()
    policy.started()
    clock.now += 2
    assert policy.crashed() == 2.0
    # Up for a minute: healthy again, the next crash is a first one.
    clock.now += 2
    policy.started()
    clock.now += RESET_AFTER_S
    assert policy.crashed() == 0.0
    assert policy.restarts == 4
