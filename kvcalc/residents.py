"""What else lives in GPU memory beside the target's weights and KV cache: a speculative draft
model (its weights, and its KV per token in the target's pool), LoRA adapter slots, a CPU tier
for KV blocks in host RAM, and a multimodal model's vision tower with vLLM's profiling of it. Pure
functions; each tenant becomes a term of the engine's budget (kvcalc.engines.Budget), with the
engine source it follows."""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

from typing import Literal

from kvcalc import engines, vision
from kvcalc.base import Frozen
from kvcalc.engines import Budget, BudgetTerm
from kvcalc.engines.base import GpuMemory, byte_fraction, cdiv, term_lines
from kvcalc.engines.vllm import V0_MAX_NUM_SEQS, default_max_num_seqs, runs_v0
from kvcalc.errors import DoesNotFit, InvalidInput
from kvcalc.kvcache import cache_layout, kv_heads_per_rank, layer_bytes_per_token, layer_caches, settled
from kvcalc.spec import ModelSpec, Workload, cache_dtypes
from kvcalc.units import PACKING, DType, format_bytes, parse_engine_version
from kvcalc.weights import WeightFormat, mtp_params, per_gpu, require_params, weight_bytes, weight_format, weights_formula

MTP = "mtp"  # --speculative-model mtp: the model's own multi-token prediction layers
NGRAM = "ngram"  # --speculative-model ngram: prompt lookup, proposals matched in the request's own tokens
NGRAM_TERM = "n-gram speculation"
# vLLM's n-gram proposer, as each release holds it (read in the wheels' sources named)
NGRAM_RULE = (
    "no weights and no KV: proposals are n-grams matched in the request's own tokens on the CPU (V1:"
    " vllm/v1/spec_decode/ngram_proposer.py; V0: spec_decode/ngram_worker.py, NonLLMProposerWorkerBase"
    ".get_cache_block_size_bytes 0, so spec_decode_worker.py determine_num_available_blocks keeps the target's"
    " blocks, 0.8.4); no lookahead slots (vllm/config/vllm.py num_lookahead_tokens: K for EAGLE, MTP and draft"
    " models only; v1/core/sched/scheduler.py 0.9.1-0.27.1); the V1 model runner (config/vllm.py"
    " _get_v2_model_runner_unsupported_features lists ngram, 0.27.1, 0.30.0); vLLM 0.8.x runs it on the V0 engine"
    " unless VLLM_USE_V1=1 (engine/arg_utils.py _is_v1_supported_oracle, 0.8.4, 0.8.5)"
)


class Draft(Frozen):
    """A speculative draft model as the engine holds it on one GPU of the target's TP group."""

    name: str
    # a model of its own, heads on the target's hidden states (EAGLE-3, MTP), or n-gram lookup (no model)
    kind: Literal["model", "head", "ngram"]
    layers: int
    weights_bytes: int  # per GPU: split over the target's tp
    kv_bytes_per_token: int  # per GPU: all its attention layers, in the target's cache dtypes
    weights_formula: str
    kv_formula: str
    source: str  # the engine's rule


def require_same_vocabulary(target: ModelSpec, draft_model: ModelSpec) -> None:
    """Refuse a draft whose vocabulary differs from the target's: its proposals would be other tokens."""
    if draft_model.vocab is not None and target.vocab is not None and draft_model.vocab != target.vocab:
        raise InvalidInput(
            f"--speculative-model {draft_model.name}: its vocabulary ({draft_model.vocab:,}) differs from"
            f" {target.name}'s ({target.vocab:,})"
        )


# vLLM names a draft EAGLE-1 when its path or repo id holds "eagle-" and --speculative-config gives no method
# (vllm/config/speculative.py SpeculativeConfig.__post_init__, "yuhuili/EAGLE-LLaMA3-Instruct-8B"; 0.19.0): its
# config.json says LlamaForCausalLM, and EAGLEConfig swaps the architecture for EagleLlamaForCausalLM.
EAGLE_NAME_MARK = "eagle-"
EAGLE_RULE = (
    "vllm/model_executor/models/llama_eagle.py EagleLlamaForCausalLM (decoder layers, the first without its input norm,"
    " fc 2h x h without bias, no final norm) and vllm/v1/spec_decode/eagle.py _maybe_share_embeddings,"
    " _maybe_share_lm_head (the target's embedding table and LM head), 0.19.0"
)


def eagle_params(model: ModelSpec) -> int:
    """The parameters vLLM builds for an EAGLE-1 head (EAGLE_RULE): per decoder layer q, k, v, o, a
    gated MLP and two norms, less the first layer's input norm; fc from the token's embedding beside
    the target's hidden state (2h x h). Its embedding table and LM head are the target's, so not counted.

    >>> head = ModelSpec(name="e", layers=1, heads=32, kv_heads=8, head_dim=128, hidden=4096, intermediate=14336, vocab=128256)
    >>> eagle_params(head)  # 218,112,000 for the layer, less 4,096 for its input norm, + 33,554,432 for fc
    251662336
    """
    h, d = model.hidden or 0, model.key_dim
    inter = model.intermediate or 0
    per_layer = h * (model.heads + 2 * model.kv_heads) * d + model.heads * d * h + 3 * h * inter + 2 * h
    return model.layers * per_layer - h + 2 * h * h


EAGLE_RULE_RELEASE = (0, 19, 0)  # the wheel EAGLE_RULE was read in


def eagle_rule(workload: Workload) -> str:
    """EAGLE_RULE, and for a --vllm-version other than the release it was read in, that the head is
    counted as that release builds it (other releases' llama_eagle.py and eagle.py are not read)."""
    version = workload.engine.vllm_version
    if version is None or parse_engine_version(version) == EAGLE_RULE_RELEASE:
        return EAGLE_RULE
    return f"{EAGLE_RULE}; vLLM {version} is not read: its EAGLE-1 head is counted as 0.19.0 builds it"


def as_eagle_head(target: ModelSpec, model: ModelSpec, ref: str, workload: Workload) -> ModelSpec:
    """The draft as vLLM builds it: an EAGLE-1 head when `ref` (its preset, path or repo id) holds
    "eagle-" (EAGLE_NAME_MARK) and its config is a plain decoder (an EAGLE-3 config names its own
    architecture), with eagle_params as its params; any other draft unchanged. Only a dense
    full-attention Llama-style decoder is counted so, only for vllm and textbook, and only on a
    `target` of its hidden size and vocabulary: the head reads the target's hidden states and
    shares its embedding table and LM head."""
    if EAGLE_NAME_MARK not in ref.lower() or model.speculative_head is not None:
        return model
    rules = engines.profile(workload.engine)
    if rules.name not in ("vllm", "textbook"):
        raise InvalidInput(
            f"--speculative-model {ref}: an EAGLE-1 head ('eagle-' in its name, vLLM's rule) is modelled for --engine vllm"
            f" and textbook, not {rules.name}"
        )
    if model.moe is not None or model.mla is not None or model.hidden is None or model.intermediate is None:
        raise InvalidInput(f"--speculative-model {ref}: an EAGLE-1 head is counted for a dense Llama-style decoder only")
    for field in ("hidden", "vocab"):
        own, targets = getattr(model, field), getattr(target, field)
        if own is not None and targets is not None and own != targets:
            raise InvalidInput(
                f"--speculative-model {ref}: an EAGLE-1 head of {field} {own:,} cannot run on {target.name}'s {targets:,}"
                " (it reads the target's hidden states and shares its embedding table and LM head)"
            )
    params = eagle_params(model)
    return model.model_copy(
        update={
            "params": params,
            "speculative_head": "eagle",
            # the count stands for the shapes: counted from them again, the head would hold its own embedding table and LM head
            "hidden": None,
            "intermediate": None,
            "source": "; ".join(
                filter(
                    None,
                    [
                        model.source,
                        f"an EAGLE-1 head ('eagle-' in its name: vllm/config/speculative.py): {params:,} params as"
                        f" {eagle_rule(workload)}",
                    ],
                )
            ),
        }
    )


def eagle_step_reads(target: ModelSpec, head: ModelSpec, workload: Workload) -> tuple[ModelSpec, str]:
    """What one decode step of an EAGLE-1 head (as_eagle_head) reads: its own params and the target's
    LM head, V x h, which it shares (_maybe_share_lm_head, EAGLE_RULE) and runs each step to pick its
    proposal; so the head as decode times it, with its params plus the LM head's, and the line that
    says so. Any other draft unchanged, with no line."""
    if head.speculative_head != "eagle" or target.vocab is None or target.hidden is None:
        return head, ""
    lm_head = target.vocab * target.hidden
    params = int(head.params or 0)  # as_eagle_head's count
    tp = f", split over tp {workload.tp}" if workload.tp > 1 else ""
    note = (
        f"a step reads the head's {params:,} params and the target's LM head it shares, vocab * hidden ="
        f" {target.vocab:,} * {target.hidden:,} = {lm_head:,} params{tp} ({eagle_rule(workload)})"
    )
    return head.model_copy(update={"params": params + lm_head}), note


def draft(target: ModelSpec, model: ModelSpec, workload: Workload, weights: WeightFormat | None = None) -> "Draft":
    """The draft's weights (its checkpoint's format unless `weights`) and KV bytes per token per GPU,
    both split over the target's tp; its cache takes the target's cache dtypes (one --kv-dtype for
    the pool). Only full-attention and MLA drafts: window and state layers would form pools of
    their own, which kvcalc does not model for a draft."""
    rules = engines.profile(workload.engine)
    if rules.draft_rule is None:
        raise InvalidInput(f"--speculative-model is not modelled for --engine {rules.name} (vllm and textbook are)")
    caches = layer_caches(model, workload.tp, workload.engine)
    if any(cache.window is not None for cache in caches) or any(model.state_kinds()):
        raise InvalidInput(f"--speculative-model {model.name}: a draft with sliding-window or state layers is not modelled")
    require_same_vocabulary(target, model)
    fmt = weights or weight_format(model)
    params = require_params(model)
    dtypes = cache_dtypes(target, workload)
    per_layer = [layer_bytes_per_token(cache, *dtypes) for cache in caches if cache.kind != "none"]
    kv = sum(per_layer)
    tp = f" / tp {workload.tp}" if workload.tp > 1 else ""
    return Draft(
        name=model.name,
        kind="head" if model.speculative_head else "model",
        layers=len(per_layer),
        weights_bytes=per_gpu(weight_bytes(params, fmt), workload.tp),
        kv_bytes_per_token=kv,
        weights_formula=f"{weights_formula(params, fmt)}{tp}",
        kv_formula=f"{len(per_layer)} layers * {per_layer[0] if per_layer else 0:,} B per token per layer on one GPU = {kv:,} B",
        source=f"an EAGLE-1 head as {eagle_rule(workload)}, {rules.draft_rule}"
        if model.speculative_head == "eagle"
        else rules.draft_rule,
    )


def mtp_draft(model: ModelSpec, workload: Workload, weights: WeightFormat | None = None) -> "Draft":
    """The model's own MTP layers as the draft (vLLM --speculative-config method mtp): their weights
    (weights.mtp_params, in the model's format unless `weights`) and their KV per token, each layer
    a cache like the model's last, split over tp."""
    rules = engines.profile(workload.engine)
    if rules.draft_rule is None:
        raise InvalidInput(f"--speculative-model is not modelled for --engine {rules.name} (vllm and textbook are)")
    params = mtp_params(model)
    if params is None:
        raise InvalidInput(
            f"--speculative-model mtp: {model.name} has no MTP layers kvcalc can size"
            " (num_nextn_predict_layers / mtp_num_hidden_layers, and its shapes)"
        )
    fmt = weights or weight_format(model)
    last = layer_caches(model, workload.tp, workload.engine)[-1]
    per_layer = layer_bytes_per_token(last, *cache_dtypes(model, workload))
    n = model.mtp_layers
    tp = f" / tp {workload.tp}" if workload.tp > 1 else ""
    return Draft(
        name=f"{model.name} MTP",
        kind="head",
        layers=n,
        weights_bytes=per_gpu(weight_bytes(params, fmt), workload.tp),
        kv_bytes_per_token=n * per_layer,
        weights_formula=f"{n} MTP layer{'s' if n > 1 else ''} (a decoder layer + eh_proj 2h*h + 3 norms, embeddings and"
        f" LM head shared): {weights_formula(params, fmt)}{tp}",
        kv_formula=f"{n} layers * {per_layer:,} B per token per layer on one GPU = {n * per_layer:,} B",
        source=rules.draft_rule,
    )


def require_speculative_tokens(tokens: int, seq: int) -> None:
    """Refuse a K that is not positive or that one sequence cannot hold: vLLM proposes at most
    max_model_len - the tokens so far (vllm/v1/spec_decode/ngram_proposer.py _find_longest_matched_ngram_and_propose_tokens,
    k = min(k, max_model_len - total_token), 0.10.2), so K proposals after a token need K < --seq."""
    if not 0 < tokens < seq:
        raise InvalidInput(
            f"--num-speculative-tokens {tokens:,}: must be from 1 to --seq - 1 ({seq - 1:,}): the proposals and the token"
            " before them fit one sequence"
        )


def ngram_draft(workload: Workload) -> "Draft":
    """vLLM's n-gram speculation (--speculative-config method ngram): no model, so no weights and no
    KV; the target verifies K proposed tokens a step (NGRAM_RULE)."""
    rules = engines.profile(workload.engine)
    if rules.name not in ("vllm", "textbook"):
        raise InvalidInput(f"--speculative-model ngram is modelled for --engine vllm and textbook, not {rules.name}")
    return Draft(
        name=NGRAM,
        kind="ngram",
        layers=0,
        weights_bytes=0,
        kv_bytes_per_token=0,
        weights_formula="no weights",
        kv_formula="no KV cache",
        source=NGRAM_RULE,
    )


def draft_term(found: Draft) -> BudgetTerm:
    """The draft's weights as a budget term (its KV is in the pool, beside the target's); n-gram
    speculation's term holds no bytes and says why."""
    if found.kind == "ngram":
        return BudgetTerm(
            name=NGRAM_TERM,
            bytes=0,
            formula="prompt lookup: no weights and no KV per token; the target verifies the K proposals in its own step",
            source=found.source,
        )
    return BudgetTerm(
        name=f"draft model weights ({found.name})",
        bytes=found.weights_bytes,
        formula=f"{found.weights_formula} = {found.weights_bytes:,} B; its KV, {found.kv_formula}, shares the target's pool",
        source=found.source,
    )


def with_draft(work: Workload, found: Draft, tokens: int = 0) -> tuple[Workload, list[BudgetTerm]]:
    """The workload with the draft in it (its kind; K proposals per step; its KV per token in the
    target's pool unless the engine keeps a second pool), and the budget terms taken from the
    cache's share: its weights, unless the engine loads them outside its fraction (with_second_pool)."""
    update: dict[str, object] = {"draft_kind": found.kind, "speculative_tokens": tokens}
    if engines.profile(work.engine).draft_second_pool:
        return work.model_copy(update=update), []
    update["draft_bytes_per_token"] = found.kv_bytes_per_token
    return work.model_copy(update=update), [draft_term(found)]


def unused_share(budget: Budget) -> BudgetTerm:
    """The budget's term for the share its fraction leaves unused ("not used (...)")."""
    (unused,) = [term for term in budget.terms if term.name.startswith("not used")]
    return unused


def with_second_pool(budget: Budget, found: Draft, target_tokens: int) -> Budget:
    """SGLang's draft: its weights and a second pool of the target's token count (the draft worker's
    token_to_kv_pool, draft_runner_cache_size = max_total_num_tokens) both live in the memory
    mem_fraction_static leaves; each becomes a term taken from that share, which must hold them."""
    unused = unused_share(budget)
    pool = target_tokens * found.kv_bytes_per_token
    left = unused.bytes - found.weights_bytes - pool
    if left < 0:
        raise DoesNotFit(
            f"the draft {found.name} needs {format_bytes(found.weights_bytes + pool)} (weights {format_bytes(found.weights_bytes)},"
            f" a second pool of {target_tokens:,} tokens {format_bytes(pool)}) beyond the {format_bytes(unused.bytes)}"
            f" {unused.name.removeprefix('not used ')} leaves: lower --mem-fraction-static"
        )
    terms = [
        BudgetTerm(
            name=f"draft model weights ({found.name})",
            bytes=found.weights_bytes,
            formula=f"{found.weights_formula} = {found.weights_bytes:,} B, loaded after the target sized its pool",
            source=found.source,
        ),
        BudgetTerm(
            name=f"draft KV pool ({target_tokens:,} tokens)",
            bytes=pool,
            formula=f"the target's tokens * the draft's bytes per token = {target_tokens:,} * {found.kv_bytes_per_token:,}"
            f" = {pool:,} B ({format_bytes(pool)}); {found.kv_formula}",
            source=found.source,
        ),
    ]
    rest = unused.model_copy(
        update={"bytes": left, "formula": f"{unused.formula}; less the draft's weights and second pool: {left:,} B left"}
    )
    lines = [line for term in terms for line in term_lines(term)]
    lines.append(
        f"{unused.name} = {unused.bytes:,} - {found.weights_bytes:,} - {pool:,} = {left:,} B ({format_bytes(left)}) left for"
        " activations and CUDA graphs (kvcalc.residents); the target's pool is as before"
    )
    return budget.model_copy(
        update={
            "terms": [rest if term is unused else term for term in budget.terms] + terms,
            "explain": [*budget.explain, *lines],
        }
    )


def _within(version: str | None, releases: tuple[tuple[int, int, int], tuple[int, int, int]]) -> bool:
    """Whether vLLM `version` is in [releases[0], releases[1])."""
    return version is not None and releases[0] <= parse_engine_version(version) < releases[1]


LORA_TERM = "LoRA slots"
VLLM_MAX_LORA_RANK = 16  # vLLM's default --max-lora-rank (vllm/config/lora.py)
# vLLM 0.7.x budgets without the LoRA slots: V0's load_model measures model_memory_usage around get_model only and
# creates the LoRA manager (its slots) after it, and 0.7.0's memory_profiling (the torch peak's increase over the
# snapshot before the profile run, non-torch as cuda - torch memory_reserved) leaves torch tensors allocated before
# the run out of both (vllm/worker/model_runner.py load_model, vllm/utils.py memory_profiling, the 0.7.0 and 0.7.3
# wheels; vllm-project/vllm#14450). 0.6.6's non_torch_increase (cuda used - weights - the torch diff) still held them,
# and 0.8.0 moved create_lora_manager inside the DeviceMemoryProfiler, so "Model loading took" counts them.
LORA_OUTSIDE_BUDGET = ((0, 7, 0), (0, 8, 0))


def lora_outside_budget(version: str | None) -> bool:
    """Whether vLLM `version` sizes its KV cache without the LoRA slots (LORA_OUTSIDE_BUDGET: 0.7.x).

    >>> [lora_outside_budget(v) for v in ("0.6.6.post1", "0.7.0", "0.7.3", "0.8.0", None)]
    [False, True, True, False, False]
    """
    return _within(version, LORA_OUTSIDE_BUDGET)


def lora_term(
    model: ModelSpec, workload: Workload, max_loras: int, rank: int | None = None, dtype: DType | None = None
) -> BudgetTerm:
    """The LoRA slots vLLM preallocates on one GPU: for every wrapped linear of every layer, per
    slot, A of (rank, input) and B of (output, rank) for each packed slice, in --lora-dtype (default:
    the model's). Column-parallel qkv_proj (3 slices: q, k, v) and gate_up_proj (2) keep A whole and
    split B's output over tp; row-parallel o_proj and down_proj split A's input and keep B whole
    (vllm/lora/layers/base_linear.py create_lora_weights, column_parallel_linear.py
    MergedColumnParallelLinearWithLoRA / MergedQKVParallelLinearWithLoRA). Per layer: slots * rank *
    b * (A + B), A = 3h + H*d/tp + 2h + I/tp, B = H*d/tp + 2*Hkv_rank*d + h + 2I/tp + h; the
    embedding and LM-head wrappers (a few MB) are not counted."""
    rules = engines.profile(workload.engine)
    if rules.name not in ("vllm", "trtllm"):
        raise InvalidInput(f"--max-loras is modelled for --engine vllm and trtllm, not {rules.name}")
    if model.mla is not None or model.moe is not None or model.hidden is None or model.intermediate is None:
        raise InvalidInput(f"--max-loras: {model.name}'s layers are not the dense q/k/v/o and gated-MLP kvcalc sizes LoRA for")
    if any(model.state_kinds()):
        raise InvalidInput(f"--max-loras: {model.name} has state layers; LoRA for them is not modelled")
    if max_loras < 1 or (rank is not None and rank < 1):
        raise InvalidInput("--max-loras and --max-lora-rank must be positive integers")
    if rules.name == "trtllm":
        if rank is None:
            raise InvalidInput("--max-loras with --engine trtllm: give --max-lora-rank (its lora_config.max_lora_rank)")
        return trtllm_lora_term(model, workload, max_loras, rank, dtype)
    rank = VLLM_MAX_LORA_RANK if rank is None else rank
    lora_dtype = dtype or model.dtype
    b = PACKING[lora_dtype].block_bytes
    tp, h, d, inter = workload.tp, model.hidden, model.key_dim, model.intermediate
    q_out, kv_out = model.heads * d // tp, kv_heads_per_rank(model, tp) * d
    a_values = 3 * h + model.heads * d // tp + 2 * h + inter // tp  # qkv (3 slices), o, gate_up (2), down
    b_values = q_out + 2 * kv_out + h + 2 * inter // tp + h
    per_layer = max_loras * rank * (a_values + b_values) * b
    total = per_layer * model.layers
    formula = (
        f"layers * slots * rank * b * (A + B) = {model.layers} * {max_loras} * {rank} * {b} * ({a_values:,} + {b_values:,})"
        f" = {total:,} B ({format_bytes(total)}); A: qkv 3 * h + o H*d/tp + gate_up 2 * h + down I/tp;"
        f" B: qkv (H + 2 Hkv)*d/tp + o h + gate_up 2I/tp + down h; {lora_dtype.value}"
    )
    source = (
        "vllm/lora/layers/base_linear.py create_lora_weights (lora_a_stacked, lora_b_stacked per slice),"
        " column_parallel_linear.py; --max-loras slots of --max-lora-rank"
    )
    version = workload.engine.vllm_version
    if lora_outside_budget(version):
        return BudgetTerm(
            name=LORA_TERM,
            bytes=0,
            formula=f"0 B from the KV cache: vLLM {version} sizes it without the slots, which take their {total:,} B"
            f" ({format_bytes(total)}) from the share gpu_memory_utilization leaves unused; {formula}",
            source=f"{source}; vLLM 0.7.x: vllm/worker/model_runner.py load_model creates the LoRA manager after"
            " model_memory_usage, vllm/utils.py memory_profiling counts neither (0.7.0, 0.7.3; vllm-project/vllm#14450)",
        )
    return BudgetTerm(name=LORA_TERM, bytes=total, formula=formula, source=source)


TRTLLM_LORA_TERM = "LoRA device cache"
LORA_TERMS = {LORA_TERM, TRTLLM_LORA_TERM}  # budget.lora_bytes sums them
TRTLLM_OPTIMAL_ADAPTER_SIZE = 8  # PeftCacheManagerConfig optimalAdapterSize (cpp/include/.../peftCacheManagerConfig.h)
TRTLLM_MAX_ADAPTER_SIZE = 64  # PeftCacheManagerConfig maxAdapterSize


def trtllm_lora_term(model: ModelSpec, workload: Workload, max_loras: int, rank: int, dtype: DType | None) -> BudgetTerm:
    """TensorRT-LLM's LoRA device cache with lora_config.max_loras set (the PyTorch backend sets
    num_device_module_layer = max_lora_rank * layers * modules * max_loras, _torch/pyexecutor/_util.py):
    pages of slots, each slot pageWidth values, pageWidth the smallest module's (in + out) on one
    rank; a module layer of one rank takes cdiv(largest module's in + out, pageWidth) slots; a page
    holds max(layers * sum(min(8, R) * cdiv(module, pageWidth)), cdiv(min(64, R) * largest, pageWidth))
    slots; in the model's dtype (cpp/tensorrt_llm/batch_manager/peftCacheManager.cpp
    getPageManagerConfig, getMaxNumSlots; NVIDIA/TensorRT-LLM 2a9abd95). Modules: every one a Llama
    adapter may target, attn_q, attn_k, attn_v, attn_dense, mlp_h_to_4h, mlp_gate, mlp_4h_to_h.
    Without max_loras, device_cache_percent (default 0.02) of the free memory sizes it instead: not
    modelled."""
    if dtype is not None:
        raise InvalidInput("--lora-dtype is vLLM's: TensorRT-LLM keeps its LoRA cache in the model's dtype")
    if workload.pp > 1:
        raise InvalidInput("--max-loras with --engine trtllm: pipeline stages are not modelled")
    tp, h, d = workload.tp, model.hidden or 0, model.key_dim
    inter = (model.intermediate or 0) // tp
    q_out, kv_out = model.heads * d // tp, kv_heads_per_rank(model, tp) * d
    modules = [h + q_out, h + kv_out, h + kv_out, q_out + h, h + inter, h + inter, inter + h]  # in + out on one rank
    width, largest = min(modules), max(modules)
    b = PACKING[model.dtype].block_bytes
    layers = model.layers
    per_page = max(
        layers * sum(min(TRTLLM_OPTIMAL_ADAPTER_SIZE, rank) * cdiv(m, width) for m in modules),
        cdiv(min(TRTLLM_MAX_ADAPTER_SIZE, rank) * largest, width),
    )
    slots = rank * layers * len(modules) * max_loras * cdiv(largest, width)
    pages = cdiv(slots, per_page)
    total = pages * per_page * width * b
    return BudgetTerm(
        name=TRTLLM_LORA_TERM,
        bytes=total,
        formula=f"pages * slots per page * pageWidth * b = {pages:,} * {per_page:,} * {width:,} * {b} = {total:,} B"
        f" ({format_bytes(total)}); slots = rank * layers * modules * max_loras * cdiv(largest {largest:,}, pageWidth)"
        f" = {rank} * {layers} * {len(modules)} * {max_loras} * {cdiv(largest, width)} = {slots:,}",
        source="cpp/tensorrt_llm/batch_manager/peftCacheManager.cpp getPageManagerConfig, getMaxNumSlots (NVIDIA/TensorRT-LLM"
        " 2a9abd95); _torch/pyexecutor/_util.py: num_device_module_layer from lora_config.max_loras",
    )


def with_residents(budget: Budget, terms: list[BudgetTerm]) -> Budget:
    """The budget with each tenant's bytes taken from what it leaves for the KV cache, each a term
    and an --explain line of its own. Where the tenants are live in the engine's profiling run
    (TensorRT-LLM), its fraction applies after them: the KV loses f of their bytes and the share the
    fraction leaves unused the rest."""
    if not terms:
        return budget
    total = sum(term.bytes for term in terms)
    lines = [line for term in terms for line in term_lines(term)]
    taken = " - ".join(f"{term.bytes:,}" for term in terms)
    updated = budget.terms
    if engines.profile(budget.engine).residents_before_fraction:
        fraction = budget.utilization
        from_kv = byte_fraction(total, fraction)
        unused = unused_share(budget)
        rest = unused.model_copy(update={"bytes": unused.bytes - (total - from_kv)})
        updated = [rest if term is unused else term for term in budget.terms]
        usable = budget.usable_bytes - from_kv
        lines.append(
            f"left for KV = {budget.usable_bytes:,} - {fraction:g} * ({taken}) = {usable:,} B ({format_bytes(usable)}): the"
            f" tenants are in the profiling peak, so the fraction applies after them; {unused.name} {rest.bytes:,} B (kvcalc.residents)"
        )
    else:
        usable = budget.usable_bytes - total
        lines.append(
            f"left for KV = {budget.usable_bytes:,} - {taken} = {usable:,} B ({format_bytes(usable)}) (kvcalc.residents)"
        )
    every = [*updated, *terms]  # a second call (the multimodal terms) keeps the first call's figures
    lora = sum(term.bytes for term in every if term.name in LORA_TERMS)
    vision = sum(term.bytes for term in every if term.name == VISION_TERM)
    return budget.model_copy(
        update={
            "usable_bytes": usable,
            "terms": every,
            "explain": [*budget.explain, *lines],
            "lora_bytes": lora,
            "vision_bytes": vision,
        }
    )


LMCACHE_CHUNK_TOKENS = 256  # lmcache/v1/config.py chunk_size default
LMCACHE_ALIGN_BYTES = 4096  # MixedMemoryAllocator's TensorMemoryAllocator alignment


class CpuTier(Frozen):
    """A CPU tier for KV blocks in host RAM: vLLM's (--kv-offloading-size) or LMCache's local CPU
    backend (max_local_cpu_size): the host RAM it pins, the tokens it holds, and what bringing a
    re-used prefix back over each GPU's host link costs."""

    tier: Literal["vllm", "lmcache"]  # whose rule sizes it
    bytes: int  # host RAM over all ranks
    bytes_per_rank: int
    bytes_per_token_per_rank: int  # every layer of the busiest stage on one rank, a draft's included
    block_size: int  # tokens per stored unit: vLLM's GPU block, LMCache's chunk
    tokens: int  # whole blocks the tier holds
    sequences: int  # whole --seq contexts it holds
    reload_tokens: int  # the prefix brought back
    reload_bytes_per_rank: int
    reload_seconds: float | None  # over --pcie-gb-per-s, every rank over its own link at once; None without it
    explain: list[str]


def cpu_tier(
    model: ModelSpec,
    workload: Workload,
    size_bytes: int,
    reload_tokens: int,
    link_bytes_per_s: float | None = None,
    tier: Literal["vllm", "lmcache"] = "vllm",
) -> "CpuTier":
    """The CPU tier's blocks and the reload of `reload_tokens` over the host link. vLLM: bytes per
    rank = size / (tp * pp), num_cpu_blocks = bytes per rank // bytes per offloaded block
    (vllm/config/vllm.py _post_init_kv_transfer_config; vllm/v1/kv_offload/cpu/spec.py
    CPUOffloadingSpec). LMCache: each rank's engine keeps max_local_cpu_size GiB of its own
    (int(size * 1024**3), lmcache/v1/config.py, default 5.0), in chunks of 256 tokens aligned to 4
    KiB: chunks = size // aligned chunk bytes (lmcache/v1/cache_engine.py calculate_chunk_budget)."""
    rules = engines.profile(workload.engine)
    flag = "--kv-offloading-size" if tier == "vllm" else "--lmcache-cpu-size"
    if rules.name != "vllm":
        owner = "a vLLM option" if tier == "vllm" else "LMCache's, modelled beside --engine vllm"
        raise InvalidInput(f"{flag} is {owner}, not for --engine {rules.name}")
    if any(model.state_kinds()):
        raise InvalidInput(f"{flag}: {model.name} has state layers; their offloading is not modelled")
    if size_bytes <= 0 or (link_bytes_per_s is not None and not link_bytes_per_s > 0):
        raise InvalidInput(f"{flag} and --pcie-gb-per-s must be positive")
    work = settled(model, workload)
    layout = cache_layout(model, work)
    per_token = max(sum(row) for row in layout.stages)
    ranks = workload.tp * workload.pp
    if tier == "vllm":
        block = rules.block_size(work) or 1
        per_rank, host = size_bytes // ranks, size_bytes
        unit = block * per_token
        blocks = per_rank // unit
        sizing = [
            f"CPU tier per rank = --kv-offloading-size / (tp * pp) = {size_bytes:,} / {ranks} = {per_rank:,} B"
            " (vllm/config/vllm.py _post_init_kv_transfer_config: the size is over all ranks)",
            f"  blocks = per rank // (block {block} * {per_token:,} B per token per rank) = {blocks:,}; tokens = {blocks * block:,}"
            " (vllm/v1/kv_offload/cpu/spec.py CPUOffloadingSpec num_cpu_blocks)",
        ]
    else:
        block = LMCACHE_CHUNK_TOKENS
        per_rank, host = size_bytes, size_bytes * ranks
        unit = cdiv(block * per_token, LMCACHE_ALIGN_BYTES) * LMCACHE_ALIGN_BYTES
        blocks = per_rank // unit
        sizing = [
            f"LMCache local CPU backend per rank = max_local_cpu_size = {per_rank:,} B, on each of {ranks} rank(s)"
            " (lmcache/v1/config.py: int(max_local_cpu_size * 1024**3), every worker's engine its own)",
            f"  chunks = per rank // (chunk {block} * {per_token:,} B per token per rank, aligned to 4 KiB = {unit:,} B)"
            f" = {blocks:,}; tokens = {blocks * block:,} (lmcache/v1/cache_engine.py calculate_chunk_budget)",
        ]
    tokens = blocks * block
    reload = reload_tokens * per_token
    seconds = reload / link_bytes_per_s if link_bytes_per_s else None
    explain = [
        *sizing,
        f"  host RAM = {host:,} B ({format_bytes(host)}), pinned",
        f"  a re-used prefix of {reload_tokens:,} tokens = {reload:,} B per rank"
        + (
            f" back over the host link in {reload / link_bytes_per_s * 1e3:.2f} ms ({link_bytes_per_s / 1e9:g} GB/s per GPU, --pcie-gb-per-s)"
            if link_bytes_per_s
            else " (give --pcie-gb-per-s, the host link's GB/s per GPU, to time it)"
        ),
    ]
    return CpuTier(
        tier=tier,
        bytes=host,
        bytes_per_rank=per_rank,
        bytes_per_token_per_rank=per_token,
        block_size=block,
        tokens=tokens,
        sequences=tokens // workload.seq,
        reload_tokens=reload_tokens,
        reload_bytes_per_rank=reload,
        reload_seconds=seconds,
        explain=explain,
    )


VISION_TERM = "vision tower weights"
MM_PROFILE_TERM = "multimodal profiling"
# vllm/config/multimodal.py (MultiModalConfig.limit_per_prompt): a modality the user does not limit
# is allowed this many items per prompt; the profiling run packs as many as the encoder budget holds.
VLLM_DEFAULT_MM_LIMIT = 999
IMAGE = "image"  # every vision tower serves images; kvcalc profiles the largest (a video only where the tower gives its sizes)


class Multimodal(Frozen):
    """What a deployment does with a multimodal model's tower: vLLM's --limit-mm-per-prompt (items
    of each modality per prompt; every one 0: text only), --language-model-only, --skip-mm-profiling
    (vllm/config/multimodal.py MultiModalConfig: limit_per_prompt, language_model_only,
    skip_mm_profiling) and --mm-processor-kwargs' max_pixels."""

    limits: dict[str, int] | None = None
    language_only: bool = False
    skip_profiling: bool = False
    max_pixels: int | None = None  # --mm-processor-kwargs '{"max_pixels": N}': a Qwen-VL processor's largest image

    def limit(self, modality: str, default: int) -> int:
        """Items per prompt of `modality`: --limit-mm-per-prompt's entry, or the engine's `default`."""
        return (self.limits or {}).get(modality, default)

    def text_only(self, model: ModelSpec) -> bool:
        """--language-model-only, or every modality the model serves (served_modalities) limited to 0:
        the vision tower is neither built nor profiled. One modality still served keeps both."""
        return self.language_only or all(self.limit(m, VLLM_DEFAULT_MM_LIMIT) == 0 for m in served_modalities(model))


VIDEO = "video"
# vLLM's Qwen-VL processing info serves images and videos (vllm/model_executor/models/qwen2_vl.py
# Qwen2VLProcessingInfo.get_supported_mm_limits {"image": None, "video": None}, which qwen3_vl.py's
# Qwen3VLProcessingInfo inherits, 0.11.0-0.19.0): kvcalc knows such a tower by its processor's max_pixels
# (pixels_per_patch) or its video sizes; any other tower is taken to serve images only.


def served_modalities(model: ModelSpec) -> tuple[str, ...]:
    """The modalities kvcalc knows `model`'s tower to serve: image, and video for a Qwen-VL processor."""
    tower = model.vision
    if tower is not None and (tower.pixels_per_patch is not None or tower.video_patches_per_item is not None):
        return (IMAGE, VIDEO)
    return (IMAGE,)


# vLLM's built-in modalities (vllm/multimodal/inputs.py MultiModalDataBuiltins: image, video, audio). A limit on one
# the model does not serve is left unused, as vLLM's get_allowed_mm_limits reads only the supported ones.
MODALITIES = (IMAGE, VIDEO, "audio")


def require_known_modalities(model: ModelSpec, settings: Multimodal) -> None:
    """Refuse a --limit-mm-per-prompt key that names no modality (a misspelt one would be silently unused)."""
    unknown = sorted(set(settings.limits or {}) - set(MODALITIES))
    if unknown:
        raise InvalidInput(
            f"--limit-mm-per-prompt: {', '.join(map(repr, unknown))} is not a modality; {model.name} serves"
            f" {' and '.join(served_modalities(model))}"
        )


def vision_term(model: ModelSpec, workload: Workload, settings: Multimodal) -> BudgetTerm | None:
    """The vision tower's weights on one GPU: its parameters (and its projector's) in their stored
    dtype, split over tp as vLLM shards the encoder by default (mm_encoder_tp_mode "weights",
    vllm/config/multimodal.py); None without a tower, in text-only mode, or for llama.cpp, whose
    projector is its own GGUF (--mmproj)."""
    tower, rule = model.vision, engines.profile(workload.engine).vision_rule
    if tower is None or settings.text_only(model) or rule is None:
        return None
    tp = f" / tp {workload.tp}" if workload.tp > 1 else ""
    if tower.stored_bytes is not None:
        per_gpu_bytes = per_gpu(tower.stored_bytes, workload.tp)
        formula = f"stored bytes{tp} = {tower.stored_bytes:,}{tp} = {per_gpu_bytes:,} B ({format_bytes(per_gpu_bytes)})"
    else:
        dtype = tower.dtype or model.dtype
        b = PACKING[dtype].block_bytes // PACKING[dtype].block_values
        per_gpu_bytes = per_gpu(tower.params * b, workload.tp)
        formula = (
            f"params * b{tp} = {tower.params:,} * {b}{tp} = {per_gpu_bytes:,} B ({format_bytes(per_gpu_bytes)}), {dtype.value}"
        )
    return BudgetTerm(
        name=VISION_TERM,
        bytes=per_gpu_bytes,
        formula=f"{formula}, beside the language model's weights; {rule}",
        source=tower.source,
    )


def multimodal_profile_term(model: ModelSpec, workload: Workload, budget: Budget, settings: Multimodal) -> BudgetTerm | None:
    """vLLM's multimodal profiling run (vllm/v1/worker/gpu_model_runner.py profile_run, v0.11-0.19): the
    encoder runs on the largest dummy batch the encoder budget holds, and its outputs stay cached
    (encoder_cache["tmp"]) through the language model's dummy run. Encoder budget = max(
    max_num_batched_tokens, tokens per item) (vllm/v1/core/encoder_cache_manager.py
    compute_mm_encoder_budget); items = max(1, min(budget // tokens per item, max_num_seqs * per
    prompt)), per prompt = max(1, min(limit, max_model_len // tokens per item))
    (vllm/multimodal/encoder_budget.py MultiModalBudget._get_max_items); on the V0 engine (vllm.runs_v0:
    before 0.8, n-gram speculation in 0.8.x, an encoder-decoder model before 0.11) it batches
    vision.v0_profile_items instead. The torch peak is max(LM
    peak + outputs, encoder peak); the term is what it adds to the LM's activation peak: max(outputs,
    encoder peak - LM peak). Encoder peak: N patches through a layer, N * b * (2h + max(q+k+v, MLP)
    / tp) as kvcalc.engines.activations sizes a decoder layer, plus the outputs; attention scores
    are not materialised (the ViT's flash-attention path). None without a tower, for other engines,
    in text-only mode or with --skip-mm-profiling."""
    tower, rule = model.vision, engines.profile(workload.engine).mm_profile_rule
    if tower is None or rule is None or settings.text_only(model) or settings.skip_profiling:
        return None
    if tower.tokens_per_item is None or tower.patches_per_item is None or tower.hidden is None or tower.intermediate is None:
        return BudgetTerm(
            name=MM_PROFILE_TERM,
            bytes=0,
            formula="not modelled: the tower gives no shapes (hidden, intermediate, patches_per_item, tokens_per_item);"
            " add them to vision in the model's YAML",
            source=rule,
        )
    engine = budget.engine
    item = profiled_item(model, workload, settings)
    if item is None:
        return BudgetTerm(
            name=MM_PROFILE_TERM,
            bytes=0,
            formula="not modelled: images are limited to 0 and the tower gives no video sizes (video_patches_per_item,"
            " video_tokens_per_item); vLLM profiles its largest video",
            source=rule,
        )
    patches_per_item, item_tokens, largest = item.patches, item.tokens, item.what
    tokens = engine.max_num_batched_tokens or 0
    encoder_budget = max(tokens, item_tokens)
    per_prompt = max(1, min(settings.limit(item.modality, VLLM_DEFAULT_MM_LIMIT), workload.seq // item_tokens))
    # max_num_seqs: vLLM's default on this much memory (the budget does not name the GPU, so an A100's smaller
    # one is not known here; the encoder budget binds long before either: per_prompt * 256 items)
    seqs = engine.max_num_seqs or default_max_num_seqs(GpuMemory(total_bytes=budget.memory_bytes))
    items = max(1, min(encoder_budget // item_tokens, seqs * per_prompt))
    batch = f"encoder budget max(max_num_batched_tokens {tokens:,}, {item_tokens:,} tokens per item) = {encoder_budget:,}"
    if runs_v0(model, workload) is not None:
        items, batch = vision.v0_profile_items(
            tokens,
            engine.max_num_seqs or V0_MAX_NUM_SEQS,
            item_tokens,
            settings.limit(item.modality, vision.V0_MM_LIMIT),
            tower.encoder_decoder,
        )
    b = PACKING[model.dtype].block_bytes if model.dtype in (DType.fp32, DType.fp16, DType.bf16) else 2
    h, tp = tower.hidden, workload.tp
    mlp = (3 if tower.gated else 2) * tower.intermediate // tp
    patches = items * patches_per_item
    width = tower.output_width or model.hidden or 0
    returned = items * item.rows * width * b
    rows, held_why = held_rows(item, encoder_budget, workload.engine.vllm_version)
    outputs = items * rows * width * b
    encoder = patches * b * (2 * h + max(3 * h // tp, mlp)) + returned
    lm = next((term.bytes for term in budget.terms if term.name == "activation peak"), 0)
    extra = max(outputs, encoder - lm)
    return BudgetTerm(
        name=MM_PROFILE_TERM,
        bytes=extra,
        formula=f"max(encoder outputs, encoder peak - LM activation peak) = max({outputs:,}, {encoder:,} - {lm:,}) = {extra:,} B"
        f" ({format_bytes(extra)}); {batch}: {items} item{'s' if items > 1 else ''} of {patches_per_item:,}"
        f" patches ({largest}); outputs = items * rows * width * b = {items} * {rows:,} * {width:,} * {b}, {held_why};"
        f" encoder peak = N * b * (2h + max(3h, MLP) / tp) + outputs = {patches:,} * {b} * (2 * {h:,} + max({3 * h // tp:,},"
        f" {mlp:,})) + {returned:,}; --limit-mm-per-prompt at 0 for every modality served ({', '.join(served_modalities(model))})"
        " or --skip-mm-profiling removes it",
        source=rule,
    )


# vLLM 0.11-0.12 counts a Qwen3-VL video's tokens 12.5 times over for the timestamps' text (qwen3_vl.py
# get_max_video_tokens, formatted_video_soft_tokens, in the 0.11.0 to 0.12.0 wheels, not 0.13.0), and keeps each dummy
# encoder output it profiles padded with zeros: 0.11.x to the encoder budget's rows, 0.12.x to the modality's tokens
# per item (gpu_model_runner.py profile_run, new_zeros; gone from 0.13.0). The zeros stay cached through the language
# model's dummy run (encoder_cache["tmp"]).
VIDEO_TOKEN_FACTOR_RELEASES = ((0, 11, 0), (0, 13, 0))
PAD_TO_BUDGET_RELEASES = ((0, 11, 0), (0, 12, 0))
PAD_TO_ITEM_RELEASES = ((0, 12, 0), (0, 13, 0))


class ProfiledItem(Frozen):
    """The item vLLM's multimodal profiling feeds the tower: of the modality whose item has the most
    tokens (vllm/v1/worker/utils.py MultiModalBudget.get_modality_with_max_tokens, 0.12.0;
    vllm/multimodal/encoder_budget.py, 0.19.0)."""

    modality: str
    patches: int  # the tower's input rows for one item
    tokens: int  # vLLM's count of its tokens: the encoder budget and the items a batch holds
    rows: int  # the embeddings the tower returns for it
    what: str  # what sets its size


def profiled_item(model: ModelSpec, workload: Workload, settings: Multimodal) -> "ProfiledItem | None":
    """The largest image (largest_item), or the largest video where the tower gives one, video is not
    limited to 0, and vLLM counts more tokens for it (times video_token_factor in 0.11-0.12) or images
    are limited to 0; None when images are limited to 0 and the tower gives no video sizes."""
    tower = model.vision
    assert tower is not None
    patches, tokens, largest = largest_item(model, settings)
    image = None
    if settings.limit(IMAGE, VLLM_DEFAULT_MM_LIMIT) > 0:
        image = ProfiledItem(modality=IMAGE, patches=patches, tokens=tokens, rows=tokens, what=largest)
    video_patches, video_tokens = tower.video_patches_per_item, tower.video_tokens_per_item
    if video_patches is None or video_tokens is None or settings.limit(VIDEO, VLLM_DEFAULT_MM_LIMIT) == 0:
        return image
    version = workload.engine.vllm_version
    counted, what = video_tokens, "the processor's largest video"
    if tower.video_token_factor is not None and _within(version, VIDEO_TOKEN_FACTOR_RELEASES):
        counted = int(video_tokens * tower.video_token_factor)
        what += f", its {video_tokens:,} tokens counted {tower.video_token_factor:g} times over (vLLM {version}: qwen3_vl.py get_max_video_tokens)"
    if image is not None and counted <= tokens:
        return image
    return ProfiledItem(modality=VIDEO, patches=video_patches, tokens=counted, rows=video_tokens, what=what)


def held_rows(item: ProfiledItem, encoder_budget: int, version: str | None) -> tuple[int, str]:
    """The rows of each dummy encoder output vLLM keeps cached, and why: what the tower returns, padded
    with zeros to the encoder budget (0.11.x) or to the item's tokens (0.12.x) when fewer."""
    if _within(version, PAD_TO_BUDGET_RELEASES) and item.rows < encoder_budget:
        return encoder_budget, f"padded to the encoder budget (vLLM {version}: gpu_model_runner.py profile_run new_zeros)"
    if _within(version, PAD_TO_ITEM_RELEASES) and item.rows < item.tokens:
        return (
            item.tokens,
            f"padded to the item's {item.tokens:,} tokens (vLLM {version}: gpu_model_runner.py profile_run new_zeros)",
        )
    return item.rows, "as the tower returns them"


def largest_item(model: ModelSpec, settings: Multimodal) -> tuple[int, int, str]:
    """The patches and tokens of the largest image vLLM profiles with, and what sets it: the
    processor's default, or --mm-processor-kwargs' max_pixels for a Qwen-VL processor (patches =
    max_pixels // patch_size^2, tokens = patches // spatial_merge_size^2, as its smart_resize keeps
    the image under max_pixels; vLLM's Qwen2VLProcessingInfo get_image_size_with_most_features)."""
    tower = model.vision
    assert tower is not None and tower.patches_per_item is not None and tower.tokens_per_item is not None
    if settings.max_pixels is None:
        return tower.patches_per_item, tower.tokens_per_item, "the processor's largest image"
    if tower.pixels_per_patch is None or tower.patches_per_token is None:
        raise InvalidInput(
            f"--mm-processor-kwargs max_pixels: kvcalc resizes Qwen-VL processors' images only, not {model.name}'s"
        )
    patches = settings.max_pixels // tower.pixels_per_patch
    if patches < tower.patches_per_token:
        raise InvalidInput(f"--mm-processor-kwargs max_pixels {settings.max_pixels:,}: smaller than one image token")
    return patches, patches // tower.patches_per_token, f"max_pixels {settings.max_pixels:,}"


def multimodal_terms(model: ModelSpec, workload: Workload, budget: Budget, settings: Multimodal) -> list[BudgetTerm]:
    """The tower's weights and vLLM's multimodal profiling as budget terms (none for a text model)."""
    require_known_modalities(model, settings)
    weights = vision_term(model, workload, settings)
    profile = multimodal_profile_term(model, workload, budget, settings)
    return [term for term in (weights, profile) if term is not None]
