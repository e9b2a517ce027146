"""Figures that hold still: robust estimates of repeated timings, and when a run cannot be judged. torch-free.

A shared machine only ever slows a run down (another process takes the core, the memory bus or the
last-level cache), so the figure of a repeated timing is its fast end: the lower quartile of its
samples, which one slow sample cannot move by more than one rank and one lucky sample cannot set.
Every figure is sampled in interleaved rounds (bandwidth, compute rate and the timed steps in turn),
so a drift of the machine reaches all of them alike and shows as spread instead of hiding in one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from kvcalc.base import Frozen
from kvcalc.units import format_seconds

TOLERANCE = 4 / 3  # a figure holds still when its median is within this factor of its steady time
ROUNDS, REPEATS = 5, 2  # interleaved rounds, and samples of each figure per round
Timer = Callable[[Callable[[], object]], float]  # runs a task once and returns its seconds


def steady(seconds: Sequence[float]) -> float:
    """The time repeated runs settle to: the lower quartile of the samples (the fastest of up to three).

    >>> steady([1.0, 1.1, 0.9, 50.0]), steady([1.0, 1.1, 0.9, 1.2, 1.0, 50.0])
    (0.9, 1.0)
    """
    if not seconds:
        raise ValueError("no samples")
    ordered = sorted(seconds)
    return ordered[(len(ordered) - 1) // 4]


class Figure(Frozen):
    """One repeated measurement: its steady, median and extreme times, and whether it held still."""

    name: str
    samples: int
    steady_seconds: float
    median_seconds: float
    fastest_seconds: float
    slowest_seconds: float
    spread: float  # median / steady
    holds: bool  # spread <= tolerance


def summarise(name: str, seconds: Sequence[float], tolerance: float = TOLERANCE) -> Figure:
    """A figure from its samples: it holds still when half its samples are within `tolerance` of its steady time."""
    settled, median = steady(seconds), statistics.median(seconds)
    spread = median / settled if settled > 0 else float("inf")
    return Figure(
        name=name,
        samples=len(seconds),
        steady_seconds=settled,
        median_seconds=median,
        fastest_seconds=min(seconds),
        slowest_seconds=max(seconds),
        spread=spread,
        holds=spread <= tolerance,
    )


def interleaved(
    tasks: dict[str, Callable[[], object]],
    rounds: int,
    repeats: int,
    timer: Timer,
    settle: Callable[[], object] = lambda: None,
) -> dict[str, list[float]]:
    """Run every task once untimed (warm-up), then `rounds` times: each task `repeats` times in turn.

    `settle` runs before every timed sample (a barrier across tensor-parallel ranks, so they time
    the same task at the same moment). The order and counts are fixed, never adaptive, so every rank
    of a process group calls its collectives alike.
    """
    for task in tasks.values():
        settle()
        task()
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(rounds):
        for name, task in tasks.items():
            for _ in range(repeats):
                settle()
                samples[name].append(timer(task))
    return samples


def unsteady(figures: Sequence[Figure], tolerance: float = TOLERANCE) -> list[str]:
    """Why these figures cannot carry a prediction: one line per figure that did not hold still."""
    return [
        f"{f.name} did not hold still: its median {format_seconds(f.median_seconds)} is {f.spread:.2f}x its steady"
        f" {format_seconds(f.steady_seconds)} (tolerance {tolerance:.2f}x)"
        for f in figures
        if not f.holds
    ]
