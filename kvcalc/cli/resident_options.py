"""The options for what else a deployment holds in GPU memory (kvcalc.residents), each defined once,
and turning them into the workload and the budget terms they add."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import presets, residents
from kvcalc.engines import BudgetTerm
from kvcalc.spec import ModelSpec, Workload

SpeculativeModelOpt = Annotated[
    str | None,
    typer.Option(
        "--speculative-model",
        help="A draft model for speculative decoding (a preset, YAML or config.json, or a Hub repo id): its weights in the"
        " budget, its KV per token beside the target's in one pool (vllm, textbook).",
    ),
]


def with_draft(
    target: ModelSpec, work: Workload, draft_ref: str | None, presets_dir: list[str] | None
) -> tuple[Workload, list[BudgetTerm]]:
    """The workload with the draft's KV per token in the pool, and its weights as a budget term."""
    if draft_ref is None:
        return work, []
    found = residents.draft(target, presets.load_model(draft_ref, presets_dir), work)
    return work.model_copy(update={"draft_bytes_per_token": found.kv_bytes_per_token}), [residents.draft_term(found)]
