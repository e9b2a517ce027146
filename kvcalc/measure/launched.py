"""measure --tp N under a launcher that starts the ranks itself (torchrun, or any that sets torch's env://
variables): every process runs `kvcalc measure --tp N` as one rank, in its own process, joins the group
the launcher set up, and rank 0 gathers every rank's report and prints it; the others print nothing.

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m kvcalc measure --tp 16

torch-free until a rank runs: the launch is read from the environment torchrun documents (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; torch/distributed/run.py).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class Launch(Frozen):
    """This process's place in a launched group: its global rank, and its rank and group size on its node."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def primary(self) -> bool:
        return self.rank == 0


def launched() -> Launch | None:
    """The launch torchrun's environment describes, or None when kvcalc was not started by a launcher
    (kvcalc's own worker processes get RANK too, but never LOCAL_RANK)."""
    if not all(os.environ.get(name) for name in LAUNCH_VARIABLES):
        return None
    try:
        rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        raise InvalidInput("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, as torchrun sets them") from None
    if not (0 <= rank < world and 0 <= local < local_world <= world):
        raise InvalidInput(f"the launcher's RANK {rank} / WORLD_SIZE {world} / LOCAL_RANK {local} do not describe one rank")
    return Launch(rank=rank, world_size=world, local_rank=local, local_world_size=local_world)


def check_launch(launch: Launch, tp: int, variants: int) -> None:
    """The launcher started as many ranks as --tp asks for, and they measure one model."""
    if launch.world_size != tp:
        raise InvalidInput(
            f"the launcher started {launch.world_size} ranks and --tp says {tp}: give --tp {launch.world_size}"
            " (torchrun's --nnodes x --nproc-per-node)"
        )
    if tp > 1 and variants > 1:
        raise InvalidInput("--tp measures one model at a time: drop --variants")


class _Progress(io.TextIOBase):
    """The worker's JSON-lines channel, read in this process: each stage goes to `progress`."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        import json

        for line in filter(None, text.splitlines()):
            stage = json.loads(line).get("stage")
            if stage:
                self.progress(stage)
        return len(text)


def measure_launched(request: Any, launch: Launch, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """This rank's measurement; on rank 0, every rank's report in rank order (gathered over the launcher's
    group before it is torn down), elsewhere none."""
    from kvcalc.measure import require_torch
    from kvcalc.measure.worker import Channel, measure_rank

    require_torch()
    channel = Channel(_Progress(progress if launch.primary else lambda _stage: None))  # type: ignore[arg-type]
    return measure_rank(request, launch.rank, channel, launch)  # type: ignore[no-any-return]
