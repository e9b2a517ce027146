"""KV-cache and recurrent-state bytes: pure functions, exact integers, no I/O.

Everything that needs KV bytes (size, fit, decode, compare, measure) goes through
`layer_caches` (what each layer stores per token) and `tokens_held` (how many tokens it
keeps), both asking the workload's engine profile (kvcalc.engines) and never naming an engine.
State layers (Mamba, Gated DeltaNet, lightning, short conv) keep a fixed state per sequence:
`state_layout` (shapes from kvcalc.state, dtypes and pages from the engine). Compressed-attention layers
(DeepSeek-V4) keep several caches, each one entry per r tokens of at most a window (`compressed_parts`),
counted through the same window rules. Formulas: DESIGN.md section 4.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

import operator
from collections import Counter
from typing import Literal, NamedTuple

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.engines import StateDtypes, StatePages
from kvcalc.errors import InvalidInput
from kvcalc.spec import ENGINE_CACHE_DEFAULTS, AttentionKind, Engine, ModelSpec, StateKind, Workload, cache_dtypes
from kvcalc.state import LayerState, layer_states, state_parts_bytes
from kvcalc.units import PACKING, DType, format_bytes

CacheKind = Literal[
    "full", "sliding", "chunked", "mla", "compressed", "none"
]  # none: a layer without attention (state or mlp only)
TEXTBOOK = Engine()  # the exact need's engine
FULL = (None, False, 1)  # the (window, chunked, ratio) of full-attention and MLA layers: every token, one entry each
STATE_DTYPES = (DType.fp32, DType.fp16, DType.bf16)  # what engines keep a recurrent state in (vLLM MambaDType)


class CachePart(NamedTuple):
    """One of the caches a compressed-attention layer keeps (DeepSeek-V4): entries of `entry_bytes`,
    one per `ratio` tokens, of at most the last `window` tokens (None: the whole context)."""

    what: str
    window: int | None
    ratio: int
    entry_bytes: int
    formula: str  # how entry_bytes is made, with its values


class LayerCache(Frozen):
    """What one layer caches per token on one tensor-parallel rank (a compressed layer: its `parts`)."""

    kind: CacheKind
    window: int | None  # a sliding layer's window, a chunked layer's chunk
    kv_heads: int  # per rank; 0 for an MLA latent
    k_values: int  # K elements per token (the latent for MLA); 0 when the cache is another layer's
    v_values: int  # V elements per token (the rope key part for MLA)
    shared: bool = False  # attends to an earlier layer's cache and keeps none of its own (Gemma-3n)
    extra_bytes: int = 0  # bytes per token kept besides K and V, whatever the cache dtype (a DSA indexer's keys)
    fp8_rope_values: int = 0  # under an fp8 cache, the rope part of an MLA row stays 16-bit (vLLM's fp8_ds_mla)
    parts: tuple[CachePart, ...] = ()  # a compressed layer's caches (kind compressed), in place of K and V
    compress_ratio: int | None = None  # a compressed layer's ratio (1: window only)


FP8_TYPES = (DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2)
INDEXER_SCALE_GROUP = 128  # the indexer's fp8 keys carry one fp32 scale per 128 values (quant_block_size)


def indexer_key_bytes(index_head_dim: int) -> int:
    """Bytes of one token's lightning-indexer key in one DeepSeek-sparse-attention layer: fp8 values
    plus one fp32 scale per 128, whatever the cache dtype (vLLM DeepseekV32IndexerCache: head_dim =
    index_head_dim + index_head_dim // quant_block_size * 4, uint8; SGLang NSATokenToKVPool alike).

    >>> indexer_key_bytes(128)
    132
    """
    return index_head_dim + index_head_dim // INDEXER_SCALE_GROUP * 4


def fp8_sparse_mla_bytes(latent: int, rope: int) -> int:
    """An fp8 MLA row of a DeepSeek-sparse-attention model as vLLM (fp8_ds_mla) and SGLang (NSA) store
    it: the latent in fp8 with one fp32 scale per 128 values, the rope key in bf16.

    >>> fp8_sparse_mla_bytes(512, 64)
    656
    """
    return latent + latent // INDEXER_SCALE_GROUP * 4 + 2 * rope


V4_SCALE_GROUP = 64  # DeepSeek-V4 rows: one UE8M0 (1-byte) scale per 64 fp8 values


def v4_row_bytes(head_dim: int, rope: int) -> int:
    """One DeepSeek-V4 cache row as vLLM stores it (fp8_ds_mla): the non-rope part in fp8, the rope part
    in bf16, one 1-byte scale per 64 fp8 values and one pad byte (vllm/model_executor/layers/
    deepseek_v4_attention.py @b92a330e, head_bytes = nope + rope * 2 + nope // 64 + 1; vllm/v1/attention/
    backends/mla/sparse_swa.py @03dc5649: "584B per token (448 NoPE + 128 RoPE + 8 fp8 scale)").

    >>> v4_row_bytes(512, 64)
    584
    """
    nope = head_dim - rope
    return nope + 2 * rope + nope // V4_SCALE_GROUP + 1


def compressor_overlap(ratio: int) -> int:
    """How many groups of `ratio` tokens a DeepSeek-V4 compressor's state spans: 2 where its windows
    overlap (r = 4), else 1 (vllm/model_executor/layers/deepseek_compressor.py @0de10a27: coff = 1 + (compress_ratio == 4))."""
    return 1 + (ratio == 4)


def compressed_parts(head_dim: int, rope: int, index_head_dim: int, window: int, ratio: int) -> tuple[CachePart, ...]:
    """The caches one DeepSeek-V4 layer of compress ratio `ratio` keeps per sequence, as vLLM lays them
    out: a `window`-token sliding window of rows (DeepseekV4SWACache, every layer); at r > 1 one row
    per r tokens (DeepseekV4MLAAttention's MLAAttentionSpec, compress_ratio) and the compressor's fp32
    state of its last coff * r tokens (CompressorStateCache: kv and score halves, 2 * coff * head_dim
    values per token); at r = 4 also the lightning indexer's key per row (DeepseekV4IndexerCache,
    fp8 + one fp32 scale per 128) and its compressor's state (deepseek_v4_attention.py: "Only C4A uses
    sparse attention and hence has indexer").

    >>> [(p.window, p.ratio, p.entry_bytes) for p in compressed_parts(512, 64, 128, 128, 4)]
    [(128, 1, 584), (None, 4, 584), (8, 1, 8192), (None, 4, 132), (8, 1, 2048)]
    """
    row = v4_row_bytes(head_dim, rope)
    nope = head_dim - rope
    row_formula = f"{nope} fp8 + {rope} * 2 bf16 rope + {nope} // {V4_SCALE_GROUP} scales + 1 pad"
    parts = [CachePart("sliding window of rows", window, 1, row, row_formula)]
    if ratio <= 1:
        return tuple(parts)

    def state(width: int) -> CachePart:
        coff = compressor_overlap(ratio)
        what = "compressor state" if width == head_dim else "indexer compressor state"
        formula = f"2 (kv, score) * {coff} * {width} fp32"
        return CachePart(what, coff * ratio, 1, 2 * coff * width * 4, formula)  # 4: fp32

    parts += [CachePart(f"compressed rows, one per {ratio} tokens", None, ratio, row, row_formula), state(head_dim)]
    if ratio == 4:
        key = f"{index_head_dim} fp8 + {index_head_dim} // 128 * 4 fp32 scales"
        parts += [CachePart("indexer keys, one per 4 tokens", None, ratio, indexer_key_bytes(index_head_dim), key)]
        parts.append(state(index_head_dim))
    return tuple(parts)


def entries_held(workload: Workload, window: int | None, ratio: int, seq: int, peak: bool = False, chunked: bool = False) -> int:
    """Entries one allocation unit keeps at context `seq` in a cache of one entry per `ratio` tokens:
    the tokens the engine holds (window_tokens) over `ratio`, rounded down, as vLLM counts a compressed
    cache (a row is written once its r tokens are complete; sparse_swa.py: seq_lens // compress_ratio).

    >>> entries_held(Workload(seq=1000), None, 4, 1000), entries_held(Workload(seq=1000), None, 128, 1000)
    (250, 7)
    """
    return window_tokens(workload, window, seq, peak, chunked) // ratio


def kv_heads_per_rank(model: ModelSpec, tp: int, kv_heads: int | None = None) -> int:
    """KV heads each of `tp` ranks holds: Hkv/tp, or one replicated head when tp > Hkv (as vLLM).

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=1, heads=32, kv_heads=8, head_dim=128)
    >>> kv_heads_per_rank(m, 4), kv_heads_per_rank(m, 16)
    (2, 1)
    """
    kv_heads = kv_heads or model.kv_heads  # a kind's own count (attention_shapes), else the model's
    if model.heads % tp:
        raise InvalidInput(f"--tp {tp} does not divide the {model.heads} attention heads of {model.name}")
    if tp <= kv_heads:
        if kv_heads % tp:
            raise InvalidInput(f"--tp {tp} does not divide the {kv_heads} KV heads of {model.name}")
        return kv_heads // tp
    if tp % kv_heads:
        raise InvalidInput(f"--tp {tp} is not a multiple of the {kv_heads} KV heads of {model.name}")
    return 1  # replicated: each rank keeps one whole KV head


def layer_caches(model: ModelSpec, tp: int = 1, engine: Engine | None = None) -> list[LayerCache]:
    """Per-layer cache layout on one rank, in layer order; sliding and chunked layers are full ones under an
    engine that gives the model's architecture no window (EngineProfile.ignored_window)."""
    engine = engine or TEXTBOOK
    if model.compressed is not None:
        return _compressed_caches(model, tp, engine)
    storage = engines.profile(engine).mla_storage(engine)
    if model.mla is not None and storage != "decompressed":
        # MLA: one latent (kv_lora_rank) plus the shared rope key per token; replicated on every rank,
        # stored as one K-only row of r + rope, or as K (r) and V (rope).
        rope, rank = model.mla.qk_rope_head_dim, model.mla.kv_lora_rank
        k_only = storage == "k_only"
        indexer = model.mla.indexer_head_dim
        latent = LayerCache(
            kind="mla",
            window=None,
            kv_heads=0,
            k_values=rank + rope if k_only else rank,
            v_values=0 if k_only else rope,
            extra_bytes=indexer_key_bytes(indexer) if indexer else 0,
            fp8_rope_values=rope if indexer and k_only and engines.profile(engine).sparse_mla_fp8_layout else 0,
        )
        kv_heads_per_rank(model, tp)  # still validates the split of the query heads
        none = LayerCache(kind="none", window=None, kv_heads=0, k_values=0, v_values=0)  # Kimi-Linear's KDA layers
        return [latent if kind else none for kind in model.attention_kinds()]
    kv_heads_per_rank(model, tp)  # decompressed MLA (transformers 4.x): per-head K and V
    windows = {"sliding": model.sliding_window, "chunked": model.attention_chunk_size}
    windowless = engines.profile(engine).ignored_window(model) is not None  # llama.cpp's Phi-3 and Mistral: full layers
    first_shared = model.layers - model.kv_shared_layers  # Gemma-3n: later layers reuse earlier caches

    def cache(kind: AttentionKind | None, own: bool) -> "LayerCache":
        if kind is None:
            return LayerCache(kind="none", window=None, kv_heads=0, k_values=0, v_values=0)
        heads = kv_heads_per_rank(model, tp, model.kv_heads_of(kind))  # GQA: Hkv heads, not H
        return LayerCache(
            kind="full" if windowless else kind,
            window=None if windowless else windows.get(kind),
            kv_heads=heads,
            k_values=heads * model.key_dim_of(kind) if own else 0,
            v_values=heads * model.value_dim_of(kind) if own else 0,
            shared=not own,
        )

    kinds = model.attention_kinds()
    own, shared = kinds[:first_shared], kinds[first_shared:]
    made = {kind: cache(kind, True) for kind in set(own)}  # one value per kind, shared by its layers (frozen)
    reused = {kind: cache(kind, False) for kind in set(shared)}
    return list(map(made.__getitem__, own)) + list(map(reused.__getitem__, shared))


def refuse_compressed(model: ModelSpec, engine: Engine) -> None:
    """Refuse, as InvalidInput, a compressed-cache model (DeepSeek-V4) under an engine whose layout of it
    kvcalc does not model, before any other refusal of the engine's."""
    rules = engines.profile(engine)
    if model.compressed is not None and not rules.compressed_caches:
        raise InvalidInput(
            f"--engine {rules.name}: kvcalc does not model how {rules.label} lays out {model.name}'s compressed caches"
            " (windows, compressed rows, indexer keys and compressor state, each in its own pages); use --engine"
            " textbook for their exact bytes"
        )


def _compressed_caches(model: ModelSpec, tp: int, engine: Engine) -> list[LayerCache]:
    """DeepSeek-V4's layers, each with the caches of its compress ratio, replicated on every rank (one KV head)."""
    refuse_compressed(model, engine)
    assert model.compressed is not None and model.head_dim is not None and model.sliding_window is not None
    kv_heads_per_rank(model, tp)  # still validates the split of the query heads
    spec = model.compressed
    made = {
        ratio: LayerCache(
            kind="compressed",
            window=model.sliding_window,
            kv_heads=0,
            k_values=0,
            v_values=0,
            compress_ratio=max(ratio, 1),
            parts=compressed_parts(model.head_dim, spec.qk_rope_head_dim, spec.index_head_dim, model.sliding_window, ratio),
        )
        for ratio in set(spec.ratios)
    }  # one value per ratio, shared by its layers (frozen)
    return [made[ratio] for ratio in spec.ratios]


def attention_layers(caches: list[LayerCache]) -> list[LayerCache]:
    """The layers that cache keys and values (every layer but state and mlp layers)."""
    return [layer for layer in caches if layer.kind != "none"]


def layer_key_bytes_per_token(layer: LayerCache, dtype: DType) -> int:
    """Bytes of one token's K row in one layer, in whole blocks of `dtype` (an MLA latent's row: its K;
    0 for a compressed layer or a layer that keeps no cache of its own).

    >>> layer_key_bytes_per_token(LayerCache(kind="full", window=None, kv_heads=8, k_values=1024, v_values=1024), DType.q8_0)
    1088
    """
    if layer.parts or not layer.k_values:
        return 0
    return PACKING[dtype].row_bytes(layer.k_values, layer.kv_heads or 1)


def layer_bytes_per_token(layer: LayerCache, dtype: DType, v_dtype: DType | None = None) -> int:
    """Bytes one token takes in one layer: a K row in `dtype` plus a V row in `v_dtype` (default: the
    same), each in whole quantization blocks (with a scale per head where the format keeps one: an MLA
    latent counts as one head), plus what the layer keeps besides (a sparse-attention indexer's keys)."""
    if layer.parts:  # a compressed layer: what each of its most recent tokens takes (its windowed parts)
        return sum(part.entry_bytes for part in layer.parts if part.ratio == 1)
    heads = layer.kv_heads or 1
    if layer.fp8_rope_values and dtype in FP8_TYPES:
        return fp8_sparse_mla_bytes(layer.k_values - layer.fp8_rope_values, layer.fp8_rope_values) + layer.extra_bytes
    k_bytes = layer_key_bytes_per_token(layer, dtype)
    v_bytes = PACKING[v_dtype or dtype].row_bytes(layer.v_values, heads) if layer.v_values else 0
    return k_bytes + v_bytes + layer.extra_bytes


def layer_unit_bytes(layer: LayerCache, dtypes: tuple[DType, DType], workload: Workload, seq: int | None = None) -> int:
    """Bytes one allocation unit (a sequence) keeps in one layer at context `seq` (default: the
    workload's): bytes per token times the tokens held, or a compressed layer's parts, each its entries."""
    seq = workload.seq if seq is None else seq
    if layer.parts:
        return sum(part.entry_bytes * entries_held(workload, part.window, part.ratio, seq) for part in layer.parts)
    return layer_bytes_per_token(layer, *dtypes) * tokens_held(layer, workload, seq)


def tokens_held(layer: LayerCache, workload: Workload, seq: int | None = None, peak: bool = False) -> int:
    """Tokens a layer keeps per allocation unit (a sequence) at context `seq` (default: the
    workload's), by the workload's engine: textbook min(s, W) in a window layer, rounded up to whole
    pages when paged.

    >>> lc = LayerCache(kind="sliding", window=4096, kv_heads=8, k_values=1024, v_values=1024)
    >>> tokens_held(lc, Workload(seq=8192)), tokens_held(lc, Workload(seq=1000)), tokens_held(lc, Workload(seq=1000, block_size=16))
    (4096, 1000, 1008)
    """
    return window_tokens(workload, layer.window, workload.seq if seq is None else seq, peak, layer.kind == "chunked")


def window_tokens(workload: Workload, window: int | None, seq: int, peak: bool = False, chunked: bool = False) -> int:
    """Tokens one allocation unit keeps, by the workload's engine, in a layer of `window` (None: full
    attention or MLA; a chunk when `chunked`) at context `seq`; with `peak`, the most it holds at any moment."""
    rules = engines.profile(workload.engine)
    return (rules.peak_tokens_per_unit if peak else rules.tokens_per_unit)(workload, window, seq, chunked=chunked)


def shared_prefix_tokens(workload: Workload, seq: int | None = None) -> int:
    """Tokens of --shared-prefix the engine holds once for the whole batch at context `seq` (default:
    the workload's): the prefix, short of the context's last token (which each sequence computes
    itself: vLLM caps a cache hit at num_tokens - 1, vllm/v1/core/kv_cache_manager.py
    get_computed_blocks), in whole blocks of the engine's (the settled block on hybrid models); the
    rest of it sits in each sequence's own pages.

    >>> shared_prefix_tokens(Workload(seq=8192, batch=4, shared_prefix=1000, block_size=16))
    992
    >>> shared_prefix_tokens(Workload(seq=8192, batch=4, shared_prefix=1000, block_size=1056))
    0
    """
    if not workload.shared_prefix:
        return 0
    rules = engines.profile(workload.engine)
    if rules.prefix_rule is None:
        raise InvalidInput(f"--shared-prefix does not apply to --engine {rules.name}: it keeps every sequence's cache whole")
    block = rules.prefix_block(workload)
    return min(workload.shared_prefix, (workload.seq if seq is None else seq) - 1) // block * block


def pipeline_stages(layers: int, pp: int) -> list[range]:
    """Split layer indices into `pp` contiguous stages, the first ones one layer longer."""
    if pp > layers:
        raise InvalidInput(f"--pp {pp} exceeds the model's {layers} layers")
    base, extra = divmod(layers, pp)
    stages, start = [], 0
    for i in range(pp):
        end = start + base + (1 if i < extra else 0)
        stages.append(range(start, end))
        start = end
    return stages


class SequenceBytes(Frozen):
    """KV bytes on the busiest GPU and over all GPUs."""

    per_gpu: int
    total: int


def _over_stages(model: ModelSpec, workload: Workload, per_layer: list[int]) -> "SequenceBytes":
    per_stage = [sum(per_layer[i] for i in stage) for stage in pipeline_stages(model.layers, workload.pp)]
    return SequenceBytes(per_gpu=max(per_stage), total=sum(per_stage) * workload.tp)


class CacheLayout(NamedTuple):
    """A model's cache laid out once for a workload's split, engine and cache dtypes: each pipeline
    stage's attention layers on one rank grouped by window (a group's layers hold the same tokens)
    with their bytes per token summed, and each stage's state and fixed bytes. Bytes at any context
    or batch then cost O(stages x windows), not O(layers): the searches of kvcalc.capacity ask them
    at every probe. Ask it only about workloads that differ from the one it was laid out for in
    context and batch (engines' `reshape`)."""

    windows: list[tuple[int | None, bool, int]]  # the distinct (window, chunked, ratio); window None: every token
    stages: list[list[int]]  # per stage, per window: bytes per token of the stage's layers of that window, one rank
    state: list[int]  # per stage: recurrent-state bytes of one sequence, as allocated
    fixed: list[int]  # per stage: bytes that do not scale with tokens (the engine's fixed_bytes, a share per layer)
    block_size: int | None  # the block size the engine settles on beside state pages (settled); None: the workload's

    def _settled(self, workload: Workload) -> Workload:
        return workload if self.block_size is None else workload.model_copy(update={"block_size": self.block_size})

    def _unit_bytes(self, workload: Workload, seq: int | None, peak: bool, shared: int = 0) -> list[int]:
        """KV bytes one allocation unit holds on each stage's GPU (the workload settled), less the
        `shared` prefix tokens its full-attention layers hold once for the batch."""
        seq = workload.seq if seq is None else seq
        tokens = [
            entries_held(workload, window, ratio, seq - shared if (window, chunked, ratio) == FULL else seq, peak, chunked)
            for window, chunked, ratio in self.windows
        ]
        return [sum(map(operator.mul, stage, tokens)) for stage in self.stages]

    def _shared_bytes(self, workload: Workload, seq: int | None) -> list[int]:
        """Bytes of the shared prefix on each stage's GPU, held once: its whole blocks in the
        full-attention layers (a window layer keeps each sequence's own window)."""
        shared = shared_prefix_tokens(workload, seq)
        if not shared or FULL not in self.windows:
            return [0] * len(self.stages)
        return [shared * stage[self.windows.index(FULL)] for stage in self.stages]

    def sequence_bytes(
        self, workload: Workload, seq: int | None = None, peak: bool = False, beside_prefix: bool = False
    ) -> "SequenceBytes":
        """KV bytes one allocation unit (a sequence) holds at context `seq` (default: the workload's);
        `beside_prefix`: less the shared prefix held once for the batch."""
        settled_ = self._settled(workload)
        unit = self._unit_bytes(settled_, seq, peak, shared_prefix_tokens(settled_, seq) if beside_prefix else 0)
        return SequenceBytes(per_gpu=max(unit), total=sum(unit) * workload.tp)

    def shared_bytes(self, workload: Workload, seq: int | None = None) -> "SequenceBytes":
        """KV bytes of the shared prefix, held once for the batch."""
        per_stage = self._shared_bytes(self._settled(workload), seq)
        return SequenceBytes(per_gpu=max(per_stage), total=sum(per_stage) * workload.tp)

    def stage_bytes(self, workload: Workload, seq: int | None = None, peak: bool = False, with_state: bool = True) -> list[int]:
        """Bytes of the whole batch's cache on each stage's GPU: every allocation unit's KV, every
        sequence's state (unless not `with_state`), plus what does not scale with tokens."""
        workload = self._settled(workload)
        units = engines.profile(workload.engine).allocation_units(workload)
        sequences = workload.batch if with_state else 0
        own = self._unit_bytes(workload, seq, peak, shared_prefix_tokens(workload, seq))
        return [
            units * kv + shared + sequences * state + fixed
            for kv, shared, state, fixed in zip(own, self._shared_bytes(workload, seq), self.state, self.fixed, strict=True)
        ]

    def batch_bytes(
        self, workload: Workload, seq: int | None = None, peak: bool = False, with_state: bool = True
    ) -> "SequenceBytes":
        """Bytes of the whole batch's cache on the busiest GPU and in total (stage_bytes)."""
        per_stage = self.stage_bytes(workload, seq, peak, with_state)
        return SequenceBytes(per_gpu=max(per_stage), total=sum(per_stage) * workload.tp)


_LAYOUTS: dict[tuple[object, ...], tuple[ModelSpec, CacheLayout]] = {}  # the latest layouts, by model and options
_LAYOUTS_KEPT = 64


def cache_layout(model: ModelSpec, workload: Workload) -> "CacheLayout":
    """The model's cache laid out for the workload's tp, pp, engine and cache dtypes, whatever its
    context and batch: O(layers) once. The latest few are kept, by the model (the same frozen
    object) and every workload option but the context and batch: fit, decode and check ask again
    for the layouts of one model and engine."""
    key = (id(model), *(value for name, value in workload if name not in ("seq", "batch")))
    kept = _LAYOUTS.get(key)
    if kept is not None and kept[0] is model:
        return kept[1]
    if len(_LAYOUTS) >= _LAYOUTS_KEPT:
        _LAYOUTS.clear()
    layout = _laid_out(model, workload)
    _LAYOUTS[key] = (model, layout)
    return layout


def _laid_out(model: ModelSpec, workload: Workload) -> "CacheLayout":
    settled_ = settled(model, workload)
    dtypes = cache_dtypes(model, settled_)
    caches = layer_caches(model, settled_.tp, settled_.engine)
    attention = {id(cache): cache for cache in caches if cache.kind != "none"}  # the layers of a kind share one LayerCache
    # each layer's (window, chunked, ratio) keys and its bytes per entry under each: a compressed layer's parts
    entries = {
        key: [((p.window, False, p.ratio), p.entry_bytes) for p in cache.parts]
        or [((cache.window, cache.kind == "chunked", 1), layer_bytes_per_token(cache, *dtypes))]
        for key, cache in attention.items()
    }
    windows = list(dict.fromkeys(window for parts in entries.values() for window, _ in parts))
    split = pipeline_stages(model.layers, settled_.pp)
    stages = []
    for stage in split:
        row = [0] * len(windows)
        for key, layers in Counter(map(id, caches[stage.start : stage.stop])).items():
            for window, entry_bytes in entries.get(key, []):
                row[windows.index(window)] += layers * entry_bytes
        stages.append(row)
    if settled_.draft_bytes_per_token:  # a draft model's layers sit beside the target's, on the last stage
        if FULL not in windows:
            windows.append(FULL)
            stages = [[*row, 0] for row in stages]
        stages[-1][windows.index(FULL)] += settled_.draft_bytes_per_token
    state = state_layout(model, settled_).layer_bytes if any(model.state_kinds()) else [0] * model.layers
    fixed_per_layer = engines.profile(settled_.engine).fixed_bytes(model, settled_, dtypes[0]) // model.layers
    return CacheLayout(
        windows=windows,
        stages=stages,
        state=[sum(state[i] for i in stage) for stage in split],
        fixed=[fixed_per_layer * len(stage) for stage in split],
        block_size=settled_.block_size if settled_ is not workload else None,
    )


def sequence_bytes(model: ModelSpec, workload: Workload, seq: int | None = None, peak: bool = False) -> "SequenceBytes":
    """KV bytes one allocation unit (a sequence) holds at context `seq` (default: the workload's);
    with `peak`, the most it holds at any moment (transformers right after a long prefill)."""
    return cache_layout(model, workload).sequence_bytes(workload, seq, peak)


def state_bytes(model: ModelSpec, workload: Workload) -> "SequenceBytes":
    """Recurrent-state bytes one sequence holds, as the engine allocates them; the same at any context."""
    return _over_stages(model, workload, state_layout(model, workload).layer_bytes)


def batch_bytes(
    model: ModelSpec, workload: Workload, seq: int | None = None, peak: bool = False, with_state: bool = True
) -> "SequenceBytes":
    """Bytes of the whole batch's cache: every allocation unit's KV, every sequence's state (unless
    not `with_state`), plus what does not scale with tokens; the busiest GPU's share summed stage by stage."""
    return cache_layout(model, workload).batch_bytes(workload, seq, peak, with_state)


class StateLayout(Frozen):
    """Each layer's state on one rank and the bytes it takes per sequence: exactly, and as allocated."""

    dtypes: StateDtypes | None  # None when the model has no state layers
    states: list[LayerState | None]
    exact_bytes: list[int]  # per layer, per sequence, on one rank
    layer_bytes: list[int]  # as the engine allocates them (vLLM pads each to an attention page)
    pages: StatePages | None


def layer_state_bytes(state: LayerState, dtypes: StateDtypes) -> int:
    """Bytes of one layer's state: conv values in the conv dtype plus recurrent values in theirs."""
    return sum(state_parts_bytes([state], dtypes.conv, dtypes.recurrent))


def state_layout(model: ModelSpec, workload: Workload) -> "StateLayout":
    """The state of every layer, in the engine's dtypes and pages (all zero for a model without state)."""
    states = layer_states(model, workload.tp)
    if not any(states):
        return StateLayout(dtypes=None, states=states, exact_bytes=[0] * model.layers, layer_bytes=[0] * model.layers, pages=None)
    rules = engines.profile(workload.engine)
    dtypes = rules.state_dtypes(model, workload)
    for part, dtype in (("conv", dtypes.conv), ("recurrent", dtypes.recurrent)):
        if dtype not in STATE_DTYPES:
            raise InvalidInput(
                f"a recurrent state is kept in {', '.join(d.value for d in STATE_DTYPES)}, not {dtype.value} (the {part} state)"
            )
    exact = [layer_state_bytes(state, dtypes) if state else 0 for state in states]
    attention = attention_layers(layer_caches(model, workload.tp, workload.engine))
    per_token = layer_bytes_per_token(attention[0], *cache_dtypes(model, workload)) if attention else None
    pages = rules.state_pages(workload, per_token, max(exact), mla=model.mla is not None)
    allocated = [pages.page_bytes if state and pages.page_bytes else size for state, size in zip(states, exact, strict=True)]
    return StateLayout(dtypes=dtypes, states=states, exact_bytes=exact, layer_bytes=allocated, pages=pages)


def settled(model: ModelSpec, workload: Workload) -> Workload:
    """The workload with the attention block size its engine settles on once state pages sit beside
    the attention pages (vLLM raises it until a page holds a state), or that it forces for the model
    (vLLM's MLA backends); unchanged otherwise."""
    workload = engines.profile(workload.engine).settle(model, workload)
    if not any(model.state_kinds()):
        return workload
    layout = state_layout(model, workload)
    block = layout.pages.block_size if layout.pages else None
    if block is None or block == engines.profile(workload.engine).block_size(workload):
        return workload
    return workload.model_copy(update={"block_size": block})


def kv_dtype(model: ModelSpec, workload: Workload) -> DType:
    """The (K) cache dtype: the workload's, else the model's own dtype (cache_dtypes for K and V)."""
    return cache_dtypes(model, workload)[0]


class LayerGroup(Frozen):
    """Layers that cache alike (same kind and window), with their share of the figures."""

    kind: CacheKind
    window: int | None
    layers: int
    kv_heads_per_gpu: int
    values_per_token: int  # K + V elements per token per layer on one rank
    bytes_per_token_per_layer: int
    tokens_held: int
    tokens_exact: int
    bytes_per_sequence: int  # all layers of the group, all ranks
    shared: bool = False  # the group attends to earlier layers' caches and keeps none (Gemma-3n)
    compress_ratio: int | None = None  # a compressed group's ratio (DeepSeek-V4; 1: window only)
    compressed_rows: int = 0  # the rows a compressed group keeps beside its window, one per compress_ratio tokens


class StateGroup(Frozen):
    """State layers of one kind, with their share of the figures."""

    kind: StateKind
    layers: int
    conv_shape_per_gpu: list[int]
    recurrent_shape_per_gpu: list[int]
    conv_dtype: DType
    recurrent_dtype: DType
    bytes_per_layer: int  # exact, per sequence, on one GPU
    allocated_bytes_per_layer: int  # as the engine allocates it (vLLM: padded to an attention page)
    bytes_per_sequence: int  # all layers of the group, all ranks, as allocated


class KvEstimate(Frozen):
    """KV-cache figures for one model and workload, with the breakdown behind them."""

    model: str
    engine: str
    seq: int
    batch: int
    kv_dtype: DType  # K's and V's, or K's when v_dtype is given
    v_dtype: DType | None = None  # the V cache's dtype when it differs from the K cache's
    tp: int
    pp: int
    block_size: int | None
    groups: list[LayerGroup]
    bytes_per_token: int  # all layers, all ranks, every layer holding the token
    bytes_per_sequence: int  # KV of one allocation unit: a sequence (llama.cpp unified: the shared buffer)
    allocation_units: int
    bytes_per_batch: int  # KV of the batch
    state_groups: list[StateGroup] = []  # hybrid models' state layers, one group per kind
    state_bytes_per_sequence: int = 0  # recurrent state of one sequence, all layers, all ranks, as allocated
    state_bytes_per_batch: int = 0
    total_bytes_per_batch: int  # KV + state
    bytes_per_gpu: int  # the batch's KV and state, on the busiest GPU
    exact_bytes_per_batch: int  # the textbook KV need: no pages, no padding
    paging_waste_bytes: int  # allocated beyond the exact need (KV pages and reservations, state padding)
    peak_bytes_per_batch: int  # the most KV held at any moment (transformers right after a long prefill)
    shared_prefix_tokens: int = 0  # of --shared-prefix: held once for the batch, in the engine's whole blocks
    shared_prefix_bytes: int = 0  # their bytes, once (in bytes_per_batch)
    replicated_kv_heads: bool
    explain: list[str]

    @property
    def cache_types(self) -> str:
        """The cache's dtypes as titles name them: fp8, or K fp8, V bf16."""
        return f"K {self.kv_dtype.value}, V {self.v_dtype.value}" if self.v_dtype else self.kv_dtype.value


def exact_workload(workload: Workload) -> Workload:
    """The textbook twin of a workload: exact bytes, no pages, the same tokens (llama.cpp's n_ctx
    is the tokens of all its sequences together: its twin is one sequence of n_ctx tokens), in the engine's
    cache type (llama.cpp's f16 default stays f16 for an fp32 model)."""
    batch = engines.profile(workload.engine).exact_batch(workload)
    kv_dtype = workload.kv_dtype or ENGINE_CACHE_DEFAULTS.get(workload.engine.name)
    return workload.model_copy(update={"block_size": None, "engine": TEXTBOOK, "batch": batch, "kv_dtype": kv_dtype})


def estimate_kv(model: ModelSpec, workload: Workload) -> "KvEstimate":
    """KV bytes per token, per sequence and per batch, the state of hybrid models' state layers,
    per GPU and in total, with an explanation."""
    refuse_compressed(model, workload.engine)
    dtype, v_dtype = cache_dtypes(model, workload)
    rules = engines.profile(workload.engine)
    rules.check_supported(model, workload, dtype)
    layout = state_layout(model, workload)  # as the engine lays it out from the workload given (before settling)
    workload = settled(model, workload)
    caches = layer_caches(model, workload.tp, workload.engine)
    cache, exact_work = cache_layout(model, workload), exact_workload(workload)
    unit = cache.sequence_bytes(workload)
    kv_batch = cache.batch_bytes(workload, with_state=False)
    shared = cache.shared_bytes(workload), cache.sequence_bytes(workload, beside_prefix=True)
    batch = cache.batch_bytes(workload)
    exact = cache_layout(model, exact_work).batch_bytes(exact_work, with_state=False)
    peak = cache.batch_bytes(workload, peak=True, with_state=False)
    groups = _group_layers(caches, (dtype, v_dtype), workload)
    state = _over_stages(model, workload, layout.layer_bytes)
    state_exact = _over_stages(model, workload, layout.exact_bytes)
    state_groups = _group_states(layout, workload.tp)
    kinds = Counter(map(id, caches))  # the layers of a kind share one LayerCache
    distinct = {id(layer): layer for layer in caches}
    per_token = workload.tp * sum(layers * layer_bytes_per_token(distinct[key], dtype, v_dtype) for key, layers in kinds.items())
    return KvEstimate(
        model=model.name,
        engine=workload.engine.name,
        seq=workload.seq,
        batch=workload.batch,
        kv_dtype=dtype,
        v_dtype=v_dtype if v_dtype != dtype else None,
        tp=workload.tp,
        pp=workload.pp,
        block_size=rules.block_size(workload),
        groups=groups,
        bytes_per_token=per_token,
        bytes_per_sequence=unit.total,
        allocation_units=rules.allocation_units(workload),
        bytes_per_batch=kv_batch.total,
        state_groups=state_groups,
        state_bytes_per_sequence=state.total,
        state_bytes_per_batch=workload.batch * state.total,
        total_bytes_per_batch=batch.total,
        bytes_per_gpu=batch.per_gpu,
        exact_bytes_per_batch=exact.total,
        paging_waste_bytes=kv_batch.total - exact.total + workload.batch * (state.total - state_exact.total),
        peak_bytes_per_batch=peak.total,
        replicated_kv_heads=model.mla is None and model.compressed is None and workload.tp > model.kv_heads and bool(groups),
        shared_prefix_tokens=shared_prefix_tokens(workload),
        shared_prefix_bytes=shared[0].total,
        explain=_explain(model, workload, (dtype, v_dtype), groups, unit, kv_batch, shared)
        + _explain_state(model, workload, layout, state_groups, state, batch),
    )


def _group_states(layout: StateLayout, tp: int) -> list[StateGroup]:
    if layout.dtypes is None:
        return []
    groups: dict[str, list[int]] = {}
    for i, state in enumerate(layout.states):
        if state is not None:
            groups.setdefault(state.kind, []).append(i)
    result = []
    for indices in groups.values():
        first = layout.states[indices[0]]
        assert first is not None
        result.append(
            StateGroup(
                kind=first.kind,
                layers=len(indices),
                conv_shape_per_gpu=list(first.conv_shape),
                recurrent_shape_per_gpu=list(first.recurrent_shape),
                conv_dtype=layout.dtypes.conv,
                recurrent_dtype=layout.dtypes.recurrent,
                bytes_per_layer=layout.exact_bytes[indices[0]],
                allocated_bytes_per_layer=layout.layer_bytes[indices[0]],
                bytes_per_sequence=sum(layout.layer_bytes[i] for i in indices) * tp,
            )
        )
    return result


_STATE_LABELS = {
    "mamba1": "Mamba-1",
    "mamba2": "Mamba-2",
    "gated_deltanet": "Gated DeltaNet",
    "lightning": "lightning attention",
    "short_conv": "short conv",
    "kda": "Kimi Delta Attention",
}


def _explain_state(
    model: ModelSpec,
    workload: Workload,
    layout: StateLayout,
    groups: list[StateGroup],
    state: SequenceBytes,
    batch: SequenceBytes,
) -> list[str]:
    if layout.dtypes is None or layout.pages is None:
        return []
    rules = engines.profile(workload.engine)
    dtypes = layout.dtypes
    lines = [f"rule: {rule}" for rule in rules.state_rules(model, workload)]
    lines.append(
        f"state dtypes: conv {dtypes.conv.value} ({PACKING[dtypes.conv].block_bytes} B), recurrent {dtypes.recurrent.value}"
        f" ({PACKING[dtypes.recurrent].block_bytes} B): {dtypes.why}"
    )
    shapes = {state_.kind: state_ for state_ in layout.states if state_ is not None}
    tp = f" * tp {workload.tp}" if workload.tp > 1 else ""
    for g in groups:
        conv, rec = shapes[g.kind].conv_values, shapes[g.kind].recurrent_values
        lines.append(f"{_STATE_LABELS[g.kind]}, {g.layers} layers: {shapes[g.kind].formula}")
        lines.append(
            f"  per layer = conv {conv:,} * {PACKING[g.conv_dtype].block_bytes} + recurrent {rec:,} * {PACKING[g.recurrent_dtype].block_bytes}"
            f" = {g.bytes_per_layer:,} B, whatever the context"
        )
        if g.allocated_bytes_per_layer != g.bytes_per_layer:
            lines.append(f"  allocated per layer = {g.allocated_bytes_per_layer:,} B (see the page rule above)")
        lines.append(
            f"  per sequence = {g.layers} * {g.allocated_bytes_per_layer:,}{tp} = {g.bytes_per_sequence:,} B ({format_bytes(g.bytes_per_sequence)})"
        )
    lines.extend(layout.pages.explain)
    lines.append(
        f"state per batch = B * state per sequence = {workload.batch} * {state.total:,} = {workload.batch * state.total:,} B"
        f" ({format_bytes(workload.batch * state.total)})"
    )
    lines.append(f"KV + state per batch = {batch.total:,} B ({format_bytes(batch.total)})")
    if workload.tp > 1 or workload.pp > 1:
        lines.append(f"per GPU (tp {workload.tp}, pp {workload.pp}, busiest stage) = {batch.per_gpu:,} B, KV and state")
    return lines


def _group_layers(caches: list[LayerCache], dtypes: tuple[DType, DType], workload: Workload) -> list[LayerGroup]:
    groups: dict[tuple[str, int | None, int, int, bool, int | None], list[LayerCache]] = {}
    for layer in attention_layers(caches):
        key = (layer.kind, layer.window, layer.kv_heads, layer.k_values, layer.shared, layer.compress_ratio)
        groups.setdefault(key, []).append(layer)
    result = []
    for layers in groups.values():
        first = layers[0]
        per_token = layer_bytes_per_token(first, *dtypes)
        held = tokens_held(first, workload)
        result.append(
            LayerGroup(
                kind=first.kind,
                window=first.window,
                layers=len(layers),
                kv_heads_per_gpu=first.kv_heads,
                values_per_token=first.k_values + first.v_values,
                bytes_per_token_per_layer=per_token,
                tokens_held=held,
                tokens_exact=tokens_held(first, exact_workload(workload)),
                bytes_per_sequence=len(layers) * layer_unit_bytes(first, dtypes, workload) * workload.tp,
                shared=first.shared,
                compress_ratio=first.compress_ratio,
                compressed_rows=entries_held(workload, None, first.compress_ratio, workload.seq)
                if first.compress_ratio and first.compress_ratio > 1
                else 0,
            )
        )
    return result


def _element_bytes(dtype: DType) -> str:
    packing = PACKING[dtype]
    if packing.block_values == 1:
        return f"{packing.block_bytes} B ({dtype.value})"
    return f"{packing.block_bytes} B per {packing.block_values} values ({dtype.value}, scales included)"


def _explain(
    model: ModelSpec, workload: Workload, dtypes: tuple[DType, DType], groups: list[LayerGroup], unit: SequenceBytes,
    batch: SequenceBytes, shared: tuple[SequenceBytes, SequenceBytes],
) -> list[str]:  # fmt: skip
    rules = engines.profile(workload.engine)
    lines = model.origin()
    lines += [f"rule: {rule}" for rule in rules.rules(model, workload)]
    k_dtype, v_dtype = dtypes
    if k_dtype == v_dtype:
        lines.append(f"b = bytes per element = {_element_bytes(k_dtype)}")
    else:
        lines.append(f"b = bytes per element: K {_element_bytes(k_dtype)}, V {_element_bytes(v_dtype)}")
    for g in groups:
        labels = {"full": "full attention", "sliding": f"sliding window W={g.window}", "mla": "MLA latent"}
        label = labels.get(g.kind) or f"chunked local attention C={g.window}"
        if g.kind == "compressed":
            lines += _explain_compressed(g, cache_of_ratio(model, workload, g.compress_ratio), workload)
            continue
        if g.shared:
            lines.append(
                f"{label}, {g.layers} layers sharing earlier layers' caches (kv_shared_layers): no cache of their own = 0 B"
            )
            continue
        if g.kind == "mla" and model.mla is not None:
            rank, rope, indexer = model.mla.kv_lora_rank, model.mla.qk_rope_head_dim, model.mla.indexer_head_dim
            k_only = rules.mla_storage(workload.engine) == "k_only"
            if k_dtype == v_dtype:
                formula = f"(kv_lora_rank + qk_rope_head_dim) * b = ({rank} + {rope}) * b"
            elif k_only:  # one row of the K type; no V row
                formula = f"(kv_lora_rank + qk_rope_head_dim) * b_K = ({rank} + {rope}) * b_K (one K-only row: b_V unused)"
            else:  # the latent stored as K, the rope key as V
                formula = (
                    f"kv_lora_rank * b_K + qk_rope_head_dim * b_V = {rank} * b_K + {rope} * b_V (latent as K, rope key as V)"
                )
            if indexer and k_dtype in FP8_TYPES and rules.sparse_mla_fp8_layout and k_only:
                formula = f"fp8 latent + fp32 scale per 128 + bf16 rope = {rank} + {rank} // 128 * 4 + 2 * {rope}"
            if indexer:
                formula = f"({formula.replace(' = ', ') = (', 1)}) + indexer key (fp8 + fp32 scale per 128) ({indexer} + {indexer} // 128 * 4)"
        else:
            d_k, d_v = model.key_dim_of(g.kind), model.value_dim_of(g.kind)  # g.kind: full, sliding or chunked here
            if k_dtype == v_dtype:
                formula = f"(d_k + d_v) * Hkv * b = ({d_k} + {d_v}) * {g.kv_heads_per_gpu} * b"
            else:  # each row in whole blocks of its own type
                formula = (
                    f"d_k * Hkv * b_K + d_v * Hkv * b_V = {d_k} * {g.kv_heads_per_gpu} * b_K + {d_v} * {g.kv_heads_per_gpu} * b_V"
                )
        lines.append(f"{label}, {g.layers} layers: per token per layer = {formula} = {g.bytes_per_token_per_layer:,} B")
        held = rules.tokens_formula(workload, g.window, g.tokens_exact, chunked=g.kind == "chunked")
        lines.append(f"  tokens held = {held} = {g.tokens_held:,}")
        tp = f" * tp {workload.tp}" if workload.tp > 1 else ""
        lines.append(
            f"  per sequence = {g.layers} * {g.bytes_per_token_per_layer:,} * {g.tokens_held:,}{tp}"
            f" = {g.bytes_per_sequence:,} B ({format_bytes(g.bytes_per_sequence)})"
        )
    units = rules.allocation_units(workload)
    prefix, own = shared
    fixed = batch.total - units * (own.total if prefix.total else unit.total) - prefix.total
    extra = f" + {fixed:,} B of scales" if fixed else ""
    count = "B" if units == workload.batch else "1 shared buffer"
    held = shared_prefix_tokens(workload)
    if workload.shared_prefix:
        block = rules.prefix_block(workload)
        lines.append(
            f"shared prefix = --shared-prefix {workload.shared_prefix:,} tokens, short of the last, in whole blocks of {block:,}"
            f" = {held:,} tokens held once in the full-attention layers ({rules.prefix_rule}); window layers keep their own"
            + ("; shorter than one block: none of it is cached" if not held else "")
        )
    if prefix.total:
        lines.append(
            f"per batch = prefix once + B * the rest of each sequence{extra} = {prefix.total:,} + {units} * {own.total:,}{extra}"
            f" = {batch.total:,} B ({format_bytes(batch.total)})"
        )
    else:
        lines.append(
            f"per batch = {count} * per sequence{extra} = {units} * {unit.total:,}{extra} = {batch.total:,} B ({format_bytes(batch.total)})"
        )
    if (workload.tp > 1 or workload.pp > 1) and not any(model.state_kinds()):
        lines.append(f"per GPU (tp {workload.tp}, pp {workload.pp}, busiest stage) = {batch.per_gpu:,} B")
    return lines


def cache_of_ratio(model: ModelSpec, workload: Workload, ratio: int | None) -> LayerCache:
    """The cache of a compressed model's layers of one compress ratio (1: window only)."""
    return next(c for c in layer_caches(model, workload.tp, workload.engine) if c.compress_ratio == ratio)


def _explain_compressed(g: LayerGroup, layer: LayerCache, workload: Workload) -> list[str]:
    """A compressed group's lines: each cache part, its bytes per entry and the entries it holds."""
    ratio = g.compress_ratio or 1
    label = f"compressed attention r={ratio}" if ratio > 1 else "window-only attention (compress ratio 0)"
    lines = [f"{label}, {g.layers} layers (DeepSeek-V4, as vLLM stores it), per layer:"]
    rules = engines.profile(workload.engine)
    for part in layer.parts:
        held = entries_held(workload, part.window, part.ratio, workload.seq)
        exact = entries_held(exact_workload(workload), part.window, 1, workload.seq)
        tokens = rules.tokens_formula(workload, part.window, exact)
        count = f"{tokens} // {part.ratio}" if part.ratio > 1 else tokens
        lines.append(
            f"  {part.what}: {part.formula} = {part.entry_bytes:,} B * {count} = {held:,} entries = {part.entry_bytes * held:,} B"
        )
    tp = f" * tp {workload.tp}" if workload.tp > 1 else ""
    unit = g.bytes_per_sequence // g.layers // workload.tp
    lines.append(
        f"  per sequence = {g.layers} * {unit:,}{tp} = {g.bytes_per_sequence:,} B ({format_bytes(g.bytes_per_sequence)})"
    )
    return lines


def layer_cache_bytes(model: ModelSpec, workload: Workload) -> list[int]:
    """Each layer's cache for the whole batch, as the workload's engine allocates it: every
    allocation unit's KV cells plus every sequence's recurrent state (one rank). llama.cpp keeps each
    layer's cache on the device that holds the layer (kvcalc.placement)."""
    workload = settled(model, workload)
    dtypes = cache_dtypes(model, workload)
    units = engines.profile(workload.engine).allocation_units(workload)
    states = state_layout(model, workload).layer_bytes
    return [
        units * layer_unit_bytes(cache, dtypes, workload) + workload.batch * state
        for cache, state in zip(layer_caches(model, workload.tp, workload.engine), states, strict=True)
    ]
