"""AnswerProbe: when to look for an answer right after sending (pure bookkeeping)."""

from __future__ import annotations

import itertools

from aiotmc.transports._probe import MAX_SKIP, AnswerProbe


def looks(probe: AnswerProbe, exchanges: int) -> list[bool]:
    """What the probe decides for the next ``exchanges`` (none of which looks found)."""
    return [probe.should_look() for _ in range(exchanges)]


def test_looks_every_time_while_looks_find_the_answer() -> None:
    probe = AnswerProbe()
    for _ in range(1000):
        assert probe.should_look()
        probe.found()


def test_skips_twice_as_many_after_each_miss_up_to_the_cap() -> None:
    probe = AnswerProbe()
    looked_at = []
    for exchange in range(400):
        if probe.should_look():
            looked_at.append(exchange)
            probe.missed()
    skipped = [b - a - 1 for a, b in itertools.pairwise(looked_at)]
    assert skipped[:8] == [1, 2, 4, 8, 16, 32, MAX_SKIP, MAX_SKIP]
    assert set(skipped[6:]) == {MAX_SKIP}


def test_a_found_answer_resets_the_backoff() -> None:
    probe = AnswerProbe()
    for _ in range(8):  # back off to the cap
        probe.missed()
    assert not any(looks(probe, MAX_SKIP))
    assert probe.should_look()
    probe.found()
    assert probe.should_look()
    probe.missed()
    assert looks(probe, 2) == [False, True]  # one skipped, as after the first miss ever
