"""Decode speed with speculative decoding: a draft proposes K tokens one step at a time, the target
verifies them all in one step, and on average 1 + alpha + ... + alpha^K tokens come out of each
round (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1,
with each proposed token accepted at rate alpha given the ones before it). Pure; built on the
decode estimates of kvcalc.latency for the target and the draft."""

from kvcalc.base import Frozen
from kvcalc.errors import InvalidInput
from kvcalc.latency import DecodeEstimate
from kvcalc.residents import require_speculative_tokens
from kvcalc.units import format_seconds


def tokens_per_round(tokens: int, acceptance_rate: float) -> float:
    """Expected tokens a round yields: the accepted proposals plus the target's own token,
    1 + alpha + alpha^2 + ... + alpha^K.

    >>> tokens_per_round(3, 0.0), tokens_per_round(3, 1.0), round(tokens_per_round(4, 0.8), 4)
    (1.0, 4.0, 3.3616)
    """
    return sum(acceptance_rate**i for i in range(tokens + 1))


class SpeculativeDecode(Frozen):
    """One round of speculative decoding for the batch: K draft steps, then the target's
    verification of K + 1 tokens per sequence; the expected time per output token."""

    draft: str
    speculative_tokens: int  # K, proposed per sequence per round
    acceptance_rate: float  # alpha: each proposal accepted given the ones before it
    tokens_per_round: float  # per sequence: 1 + alpha + ... + alpha^K
    draft_step_seconds: float  # one draft step (the draft's expected decode step)
    verify_seconds: float  # the target's step over K + 1 tokens per sequence
    round_seconds: float  # K draft steps + the verification
    seconds_per_token: float  # round / tokens per round
    tokens_per_s: float  # all sequences of the batch
    speedup: float  # over the target's own expected decode
    explain: list[str]


def speculative_decode(
    target: DecodeEstimate,
    draft: DecodeEstimate | None,
    speculative_tokens: int,
    acceptance_rate: float,
    draft_reads: str = "",
) -> SpeculativeDecode:
    """The expected speed of a round: the draft's expected step K times (none for n-gram lookup,
    `draft` None: it matches the request's own tokens on the CPU, which is not timed), then the
    target's step with K + 1 query tokens per sequence: the same weights and KV read once, its FLOPs
    (K + 1) times, max(t_memory, (K + 1) * t_compute) + the fixed costs per step. Not modelled: the
    extra experts a MoE's B(K + 1) tokens touch, the larger all-reduces, a tree of proposals, the
    draft's first step over the accepted tokens. `draft_reads` says what the draft step reads beyond
    the draft's own weights (an EAGLE-1 head: the target's LM head, residents.eagle_step_reads)."""
    require_speculative_tokens(speculative_tokens, target.seq)
    if not 0 <= acceptance_rate <= 1:
        raise InvalidInput(f"--acceptance-rate {acceptance_rate:g} must be in [0, 1]: the share of proposals accepted")
    step, k = target.expected, speculative_tokens
    fixed = step.step_seconds + step.overhead_seconds + step.expert_loop_seconds + step.tp_comm_seconds
    verify = max(step.memory_seconds, (k + 1) * step.compute_seconds) + fixed
    draft_step = draft.expected_seconds_per_token if draft else 0.0
    name = draft.model if draft else "n-gram lookup"
    round_seconds = k * draft_step + verify
    per_round = tokens_per_round(k, acceptance_rate)
    per_token = round_seconds / per_round
    explain = [
        f"speculative decoding with {name}: K = {k} proposals per sequence per round, accepted at rate"
        f" alpha = {acceptance_rate:g} each (--acceptance-rate)",
        f"tokens per round = 1 + alpha + ... + alpha^K = {per_round:.4g} (Leviathan et al. 2023, eq. 1)",
        f"draft step = {format_seconds(draft_step)} (the draft's expected decode step at batch {draft.batch}, seq {draft.seq:,},"
        f" reading {draft.weights_read_bytes:,} B of weights per GPU{': ' + draft_reads if draft_reads else ''})"
        if draft
        else "draft step = 0 s: n-gram lookup runs no model on the GPU; its matching runs on the CPU in numpy and is not timed"
        " (vllm/v1/spec_decode/ngram_proposer.py NgramProposer.propose, 0.10.2)",
        f"verify = max(t_memory, (K + 1) * t_compute) + fixed = max({format_seconds(step.memory_seconds)},"
        f" {k + 1} * {format_seconds(step.compute_seconds)}) + {format_seconds(fixed)} = {format_seconds(verify)}",
        f"round = K * draft step + verify = {k} * {format_seconds(draft_step)} + {format_seconds(verify)}"
        f" = {format_seconds(round_seconds)}",
        f"time per token = round / tokens per round = {format_seconds(per_token)}; {target.batch * per_round / round_seconds:,.1f}"
        f" tokens/s over the batch, {target.expected_seconds_per_token / per_token:.2f}x the target's own"
        f" {format_seconds(target.expected_seconds_per_token)}",
    ]
    return SpeculativeDecode(
        draft=name,
        speculative_tokens=k,
        acceptance_rate=acceptance_rate,
        tokens_per_round=per_round,
        draft_step_seconds=draft_step,
        verify_seconds=verify,
        round_seconds=round_seconds,
        seconds_per_token=per_token,
        tokens_per_s=target.batch * per_round / round_seconds,
        speedup=target.expected_seconds_per_token / per_token,
        explain=explain,
    )
