"""measure --tp N under a launcher that starts the ranks itself (torchrun, or any that sets torch's env://
variables): every process runs `kvcalc measure --tp N` as one rank, in its own process, joins the group
the launcher set up, and rank 0 gathers every rank's report and prints it; the others print nothing.

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m kvcalc measure --tp 16

torch-free until a rank runs: the launch is read from the environment torchrun documents (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; torch/distributed/run.py).
"""

from __future__ import annotations

import os

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
