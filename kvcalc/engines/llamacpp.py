"""llama.cpp (`--engine llamacpp`): --seq is n_ctx, padded to 256 cells and shared by --batch
sequences (-np); block-quantized cache types; iSWA with --swa-full (only for the architectures llama.cpp gives a window: not Phi-3's or Mistral's); MLA GGUFs
cache a K-only latent; the cache is f16 unless -ctk/-ctv say otherwise (common/common.h).
Rules follow llama.cpp from PR #17046 on (llama-cpp-python 0.3.36, as measured in
shared/reference/engines.md); its memory budget is the textbook one. Hybrid models' recurrent state:
f32, max(1, n_seq_max) cells of 1 + --n-rs-seq rows each, exact against 16 published start-up logs, 6 with a web
address (the others are stored copies known by index id; tests/fixtures/engine_logs/llamacpp_recurrent.yaml, builds
b9222 to b10326). Sources: src/llama-context.cpp,
src/llama-kv-cache.cpp, src/llama-kv-cache-iswa.cpp, ggml/src/ggml.c, src/llama-model.cpp (create_memory),
src/llama-memory-recurrent.cpp, src/llama-hparams.cpp (n_embd_r, n_embd_s)."""

from __future__ import annotations

from collections.abc import Sequence

from kvcalc.decode_profiles import DecodeProfile, llamacpp_launches_per_kernel, profile_for
from kvcalc.engines.base import EngineLogLine, EngineProfile, MlaStorage, StageLayer, StateDtypes, StatePages, cdiv
from kvcalc.errors import InvalidInput
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload, cache_dtypes
from kvcalc.state import layer_states, state_parts_bytes
from kvcalc.units import PACKING, DType, MiB

LLAMACPP_PAD = 256  # llama.cpp pads the cache to 256 cells (src/llama-context.cpp, llama-kv-cache.cpp)
LLAMACPP_UBATCH = 512  # llama.cpp's default n_ubatch (common/common.h)
# llama_context refuses n_seq_max > LLAMA_MAX_SEQ ("n_seq_max must be <= 256", src/llama-context.cpp;
# #define LLAMA_MAX_SEQ 256 in src/llama-cparams.h, ggml-org/llama.cpp master of 2026): -np and --batch at most 256.
LLAMA_MAX_SEQ = 256
# llama.cpp takes at most 16 devices: the CUDA backend holds #define GGML_CUDA_MAX_DEVICES 16
# (ggml/include/ggml-cuda.h, ggml-org/llama.cpp 124d3d9428e90169a84cf903fd60d842dc3019de) and llama_max_devices()
# returns 16 (src/llama.cpp of the builds that define it there); -ts and --fit-target take one value per device.
LLAMA_MAX_DEVICES = 16


def _layer_split_hint(gpus: int) -> str:
    """How to plan a layer split over `gpus` GPUs, or why none can be (LLAMA_MAX_DEVICES)."""
    if gpus > LLAMA_MAX_DEVICES:
        return f"llama.cpp uses at most {LLAMA_MAX_DEVICES} GPUs (llama_max_devices()), so no plan splits over {gpus}"
    return f"`kvcalc fit` or `decode --engine llamacpp --tp {gpus} --gpu G` plans each GPU's layers"


# the llama_memory_recurrent constructor read: rows per cell, the log line's format (src/llama-memory-recurrent.cpp)
LLAMACPP_RECURRENT_SOURCE = (
    "src/llama-memory-recurrent.cpp llama_memory_recurrent::llama_memory_recurrent (ggml-org/llama.cpp 0054ee8c)"
)
# the llama_kv_cache constructors read: cells per stream, the size line's format (src/llama-kv-cache.cpp, src/llama-kv-cache-iswa.cpp)
LLAMACPP_KV_SOURCE = (
    "src/llama-kv-cache.cpp llama_kv_cache::llama_kv_cache, src/llama-kv-cache-iswa.cpp llama_kv_cache_iswa::llama_kv_cache_iswa"
    " (ggml-org/llama.cpp 02c28f53)"
)
# The architectures (config.json's model_type, ModelSpec.architecture, one of spec.MODEL_TYPES) whose llama.cpp
# architecture keeps a sliding or chunked window: those whose hparams loading sets swa_type (src/llama-model.cpp
# load_hparams, later src/models/<arch>.cpp load_arch_hparams). Read at ggml-org/llama.cpp 00342301: LLM_ARCH_GEMMA2,
# GEMMA3, GEMMA3N, OPENAI_MOE (gpt-oss), EXAONE4 (the 64-layer 32B) and SMALLTHINKER (when the GGUF has a window)
# set LLAMA_SWA_TYPE_STANDARD; GEMMA4 and COHERE2 (STANDARD) and LLAMA4 (LLAMA_SWA_TYPE_CHUNKED, n_swa 8192) as an
# earlier reading recorded them, at a commit it did not note. OLMo 3 converts to
# LLM_ARCH_OLMO2, which sets STANDARD when the GGUF has a window (src/models/olmo2.cpp 8a5c4e03), and AFMOE (Arcee
# Trinity) does the same and builds its graph on the iSWA cache (src/models/afmoe.cpp 5c880d94). Any other architecture
# runs its windowed layers as full ones: LLM_ARCH_PHI3 sets swa_type NONE and n_swa 0 ("Phi SWA is currently
# disabled", PR #13676), STARCODER2 reads no window, and Mistral and Mixtral convert to LLM_ARCH_LLAMA
# (convert_hf_to_gguf.py registers MistralForCausalLM and MixtralForCausalLM as LlamaModel), which reads none.
# Not listed: MiMo-V2 (src/models/mimo2.cpp 0e703ad8 sets STANDARD), whose config.json model_type was not checked.
LLAMACPP_WINDOWED_ARCHITECTURES = {
    "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text", "gemma4", "gemma4_text", "gpt_oss", "cohere2", "llama4",
    "llama4_text", "exaone4", "smallthinker", "olmo3", "afmoe",
}  # fmt: skip
LLAMACPP_WINDOW_SOURCE = (
    "src/llama-model.cpp load_hparams (LLM_ARCH_PHI3: n_swa = 0, PR #13676; LLM_ARCH_LLAMA and STARCODER2 read no"
    " sliding window; ggml-org/llama.cpp 00342301), src/models/olmo2.cpp (8a5c4e03), src/models/afmoe.cpp (5c880d94),"
    " convert_hf_to_gguf.py (MistralForCausalLM, MixtralForCausalLM -> llama)"
)
LLAMACPP_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.q8_0, DType.q4_0, DType.q4_1, DType.q5_0, DType.q5_1, DType.iq4_nl}


def recurrent_rows_per_sequence(engine: Engine) -> int:
    """Rows of r_l and s_l each sequence's cell holds: 1 + n_rs_seq, the extra rows the snapshots a
    speculative draft (or MTP) rolls back to (src/llama-memory-recurrent.cpp: n_rows = mem_size * (1 + n_rs_seq)).

    >>> recurrent_rows_per_sequence(Engine(name="llamacpp")), recurrent_rows_per_sequence(Engine(name="llamacpp", n_rs_seq=2))
    (1, 3)
    """
    return 1 + (engine.n_rs_seq or 0)


def ggml_type_name(dtype: DType) -> str:
    """A cache type as llama.cpp's log names it (ggml's type_name): f16 and f32 for kvcalc's fp16 and fp32, else
    kvcalc's name (bf16, q8_0, ...). With no --kv-dtype the cache is f16 whatever the model's dtype
    (spec.ENGINE_CACHE_DEFAULTS, common/common.h).

    >>> ggml_type_name(DType.fp16), ggml_type_name(DType.q8_0), ggml_type_name(DType.fp32), ggml_type_name(DType.bf16)
    ('f16', 'q8_0', 'f32', 'bf16')
    """
    return {DType.fp16: "f16", DType.fp32: "f32"}.get(dtype, dtype.value)


def pad(n: int, to: int) -> int:
    """Round n up to a multiple of `to` (llama.cpp's GGML_PAD).

    >>> pad(100, 256), pad(1000, 256), pad(256, 256)
    (256, 1024, 256)
    """
    return cdiv(n, to) * to


class LlamaCpp(EngineProfile):
    name = "llamacpp"
    label = "llama.cpp"
    places_layers = True  # -ngl, -ts, --n-cpu-moe, --fit (common/fit.cpp): kvcalc.placement
    draft_rule = None  # a speculative draft is not modelled for this engine yet
    vision_rule = None  # the projector is a GGUF of its own (--mmproj), placed on the first GPU by kvcalc.placement
    prefix_rule = None  # each slot keeps its own cells (its own prompt cache): sharing between slots is not modelled

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """`seq` is n_ctx, padded to 256 and shared by the sequences: PAD256(PAD256(n_ctx) / n_seq)
        cells each (one unit of PAD256(n_ctx) when unified); a SWA layer with --no-swa-full keeps
        PAD256(min(n_ctx_seq, W * (unified ? n_seq : 1) + n_ubatch)) (llama-kv-cache-iswa.cpp); a chunked
        layer (LLAMA_SWA_TYPE_CHUNKED, n_swa = the chunk) is sized the same. Exact, cells and MiB per cache,
        against published start-ups of Gemma 2, 3, 3n and 4 and gpt-oss (tests/fixtures/engine_logs/llamacpp_swa.yaml);
        builds before PR #17046 padded to 32 cells without flash attention, which kvcalc does not model."""
        engine, batch = workload.engine, workload.batch
        n_ctx = pad(seq, LLAMACPP_PAD)  # padded first, then shared out and padded again
        cells = n_ctx_seq = n_ctx if engine.kv_unified else pad(n_ctx // batch, LLAMACPP_PAD)
        if window and engine.swa_full is False:
            streams = batch if engine.kv_unified else 1
            cells = pad(min(n_ctx_seq, window * streams + (engine.ubatch or LLAMACPP_UBATCH)), LLAMACPP_PAD)
        return cells

    def allocation_units(self, workload: Workload) -> int:
        """One buffer per sequence, or one shared by all with --kv-unified."""
        return 1 if workload.engine.kv_unified else workload.batch

    def ignored_window(self, model: ModelSpec) -> str | None:
        """Sliding or chunked layers of an architecture llama.cpp gives no window (LLAMACPP_WINDOWED_ARCHITECTURES):
        full layers, every token cached. A model that names no architecture keeps the windows its layers declare
        (a GGUF's are already llama.cpp's: kvcalc.sources.gguf_model)."""
        windowed = model.sliding_window is not None or model.attention_chunk_size is not None
        if not windowed or model.compressed is not None or model.architecture in (None, *LLAMACPP_WINDOWED_ARCHITECTURES):
            return None
        return (
            f"llama.cpp gives {model.architecture} no sliding window (swa_type none): every layer is full and keeps"
            f" n_ctx_seq cells, --swa-full or not ({LLAMACPP_WINDOW_SOURCE})"
        )

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        """What llama_init_from_model refuses (src/llama-context.cpp), and flags that do not apply."""
        engine = workload.engine
        k_type, v_type = cache_dtypes(model, workload)  # -ctk and -ctv; SWA layers take the same (llama-kv-cache-iswa.cpp)
        for part, cache_type, width in (("K", k_type, model.key_dim), ("V", v_type, model.value_dim)):
            if cache_type not in LLAMACPP_DTYPES:
                raise InvalidInput(
                    f"--engine llamacpp caches {', '.join(sorted(d.value for d in LLAMACPP_DTYPES))}, not {cache_type.value} ({part})"
                )
            blocks = PACKING[cache_type].block_values
            if blocks > 1 and engine.flash_attn is not False and width % blocks:
                raise InvalidInput(
                    f"llama.cpp: {part} cache type {cache_type.value} with block size {blocks} does not divide the {part} head width {width}"
                )
        # only a quantized V needs flash attention; a quantized K does not (llama_init_from_model)
        if PACKING[v_type].block_values > 1 and engine.flash_attn is False:  # -fa auto, the default, turns it on by itself
            raise InvalidInput("llama.cpp: quantized V cache requires flash_attn to be enabled (drop -fa off)")
        if workload.seq < workload.batch:
            raise InvalidInput(
                f"llama.cpp's n_ctx (--seq {workload.seq}) is shared by --batch {workload.batch} sequences: it must be at least the batch"
            )
        if workload.batch > LLAMA_MAX_SEQ:
            raise InvalidInput(
                f"llama.cpp runs at most {LLAMA_MAX_SEQ} sequences (n_seq_max, -np; src/llama-context.cpp refuses more):"
                f" --batch {workload.batch}"
            )
        if workload.block_size is not None:
            raise InvalidInput("--block-size does not apply to --engine llamacpp (it pads to 256 cells)")
        if workload.tp > 1:  # kvcalc.cli.placement_options.layer_split_tp turns fit's and decode's --tp into devices
            raise InvalidInput(
                f"llama.cpp splits whole layers over GPUs (-sm layer), not heads, so --tp {workload.tp} is no head share:"
                f" {_layer_split_hint(workload.tp)}"
            )
        if workload.pp > 1:  # vLLM's pipeline stages (kvcalc.capacity) are no llama.cpp placement
            raise InvalidInput(
                f"llama.cpp has no pipeline stages to budget (--pp {workload.pp}): its layer split (-sm layer) puts whole layers"
                f" on each GPU; {_layer_split_hint(workload.pp)}"
            )
        if workload.state_dtype is not None:
            raise InvalidInput("llama.cpp keeps recurrent state in f32 (hard-coded in src/llama-model.cpp): drop --state-dtype")
        if engine.n_rs_seq and not any(model.state_kinds()):
            raise InvalidInput(
                f"--n-rs-seq {engine.n_rs_seq}: {model.name} has no recurrent-state layers, so llama.cpp keeps no rows to roll back"
            )
        if "lightning" in model.state_kinds():
            raise InvalidInput("llama.cpp has no lightning-attention state (MiniMax-M1): kvcalc does not model it")

    def state_dtypes(self, model: ModelSpec, workload: Workload) -> StateDtypes:
        """f32 for both: llama_model::create_memory builds llama_memory_recurrent (and the recurrent half
        of llama_memory_hybrid) with type_r = type_s = GGML_TYPE_F32 (src/llama-model.cpp)."""
        return StateDtypes(conv=DType.fp32, recurrent=DType.fp32, why="llama.cpp: type_r = type_s = f32, hard-coded")

    def state_pages(
        self, workload: Workload, attention_bytes_per_token: int | None, state_bytes: int, mla: bool = False
    ) -> StatePages:
        """Newer builds keep 1 + n_rs_seq rows per sequence (recurrent_rows_per_sequence; 0 snapshots without a draft)."""
        rows = recurrent_rows_per_sequence(workload.engine)
        if rows == 1:
            return super().state_pages(workload, attention_bytes_per_token, state_bytes, mla)
        explain = [
            f"llama.cpp: {rows} recurrent rows per sequence (1 + --n-rs-seq {rows - 1}): {rows} * {state_bytes:,} B per layer"
        ]
        return StatePages(block_size=self.block_size(workload), page_bytes=rows * state_bytes, explain=explain)

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """The "llama_memory_recurrent: size = ..." line a hybrid model's start-up prints: R is the conv
        rows (n_embd_r), S the recurrent rows (n_embd_s), both f32, rs_size * (1 + n_rs_seq) rows per state layer."""
        lines = self.kv_cache_lines(model, workload, stage)
        # the whole model's state: llama.cpp splits layers across GPUs (-sm layer, -ts), not heads, and logs the total
        states = [state for state in layer_states(model) if state]
        if not states:
            return lines
        dtypes = self.state_dtypes(model, workload)
        cells, snapshots = max(1, workload.batch), workload.engine.n_rs_seq or 0
        rows = cells * recurrent_rows_per_sequence(workload.engine)
        r, s = state_parts_bytes(states, dtypes.conv, dtypes.recurrent, rows)
        line = (
            f"llama_memory_recurrent: size = {(r + s) / MiB:7.2f} MiB ({cells:6d} cells, {model.layers:3d} layers,"
            f" {workload.batch:2d} seqs {snapshots:2d} rs_seq), R (f32): {r / MiB:7.2f} MiB, S (f32): {s / MiB:7.2f} MiB"
        )
        note = (
            f"{len(states)} state layers * {rows} rows (rs_size {cells} * (1 + n_rs_seq {snapshots})); builds before n_rs_seq print"
            " no rs_seq, a GGUF with an MTP layer one layer more; exact against tests/fixtures/engine_logs/llamacpp_recurrent.yaml"
        )
        return [
            *lines,
            EngineLogLine(
                engine=self.label, name="recurrent_state_mib", value=round((r + s) / MiB, 2), line=line, note=note,
                source=LLAMACPP_RECURRENT_SOURCE,
            ),
        ]  # fmt: skip

    def kv_cache_lines(self, model: ModelSpec, workload: Workload, stage: Sequence[StageLayer]) -> list[EngineLogLine]:
        """The "llama_kv_cache: size = ..." line of each cache llama.cpp creates: an iSWA model's
        non-SWA and SWA caches, each after its "llama_kv_cache_iswa: creating ... KV cache, size = N cells"
        line, another model's one cache. The cells are per stream (one, or one per sequence without
        --kv-unified), the MiB all streams' and all layers' whatever device holds them (llama-kv-cache.cpp sums
        size_k_bytes/size_v_bytes over its layers; the per-device "KV buffer size" lines are the placement plan's);
        a GGUF's MTP layer is not among the layers."""
        if not stage:  # (--tp and --pp above 1 never reach here: check_supported refuses them for llama.cpp)
            return []
        if model.mla is not None and model.mla.indexer_head_dim:
            return []  # the sparse-attention indexer's keys are a cache of their own (llama_kv_cache_dsa): not printed
        engine = workload.engine
        k_type, v_type = cache_dtypes(model, workload)
        k_name, v_name = ggml_type_name(k_type), ggml_type_name(v_type)
        streams, seqs = self.allocation_units(workload), workload.batch
        windowed = [layer for layer in stage if layer.window]
        caches = (
            [("non-SWA", [layer for layer in stage if not layer.window]), ("SWA", windowed)] if windowed else [("", [*stage])]
        )
        n_ctx_seq = self.tokens_per_unit(workload, None, workload.seq)
        lines = []
        for which, layers in caches:
            window, chunked = (layers[0].window, layers[0].chunked) if which == "SWA" else (None, False)
            cells = self.tokens_per_unit(workload, window, workload.seq, chunked=chunked)
            total = cells * streams * sum(layer.bytes_per_token for layer in layers)
            keys = cells * streams * sum(layer.key_bytes_per_token for layer in layers)
            size = (
                f"llama_kv_cache: size = {total / MiB:7.2f} MiB ({cells:6d} cells, {len(layers):3d} layers, {seqs:2d}/{streams} seqs),"
                f" K ({k_name}): {keys / MiB:7.2f} MiB, V ({v_name}): {(total - keys) / MiB:7.2f} MiB"
            )
            name = {"non-SWA": "full_", "SWA": "swa_", "": ""}[which]
            held = (
                f"PAD256(min(n_ctx_seq {n_ctx_seq}, W {window} * {seqs if engine.kv_unified else 1} + n_ubatch"
                f" {engine.ubatch or LLAMACPP_UBATCH})) = {cells}"
                if window and engine.swa_full is False
                else f"n_ctx_seq {cells}"
            )
            why = (
                f"{held} cells per stream, {streams} stream{'s' if streams > 1 else ''} (n_seq_max {seqs}"
                f"{', unified' if engine.kv_unified else ''}), {sum(layer.bytes_per_token for layer in layers):,} B per cell over"
                f" {len(layers)} layers; replayed against published logs, tests/fixtures/engine_logs/llamacpp_{{swa,recurrent}}.yaml"
            )
            if which:
                lines.append(
                    EngineLogLine(
                        engine=self.label, name=f"{name}kv_cache_cells", value=cells, note=why, source=LLAMACPP_KV_SOURCE,
                        line=f"llama_kv_cache_iswa: creating {which:>7} KV cache, size = {cells} cells",
                    )
                )  # fmt: skip
            lines.append(
                EngineLogLine(
                    engine=self.label, name=f"{name}kv_cache_mib", value=round(total / MiB, 2), line=size, note=why,
                    source=LLAMACPP_KV_SOURCE,
                )
            )  # fmt: skip
        return lines

    def state_rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        return [
            "llama.cpp: one recurrent cell per sequence of 1 + n_rs_seq rows (rs_size = max(1, n_seq_max), src/llama-model.cpp"
            f" create_memory; r_l, s_l of rs_size * (1 + n_rs_seq) rows, {LLAMACPP_RECURRENT_SOURCE}; published"
            " llama-server logs with --spec-type draft-mtp --spec-draft-n-max N print N rs_seq: --n-rs-seq N, only for the architectures"
            " llm_arch_supports_rs_rollback lists (src/llama-arch.cpp: qwen35, qwen35moe, later qwen4exp, kimi-k3); for any other"
            " hybrid llama_context clamps n_rs_seq to 0 (src/llama-context.cpp, a DEBUG line only) and the server checkpoints the"
            " state to host memory instead: leave --n-rs-seq at 0 there, kvcalc cannot tell the GGUF's architecture);"
            " r = (d_conv - 1) * (d_inner + 2 * n_group * d_state), s = d_state * d_inner values, short conv n_embd * (L - 1)"
            " (src/llama-hparams.cpp n_embd_r, n_embd_s, ggml-org/llama.cpp 01b77b57)",
        ]

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """MLA GGUFs cache the latent and rope key as one K-only row (llama-kv-cache.cpp has_v = !is_mla)."""
        return "k_only"

    def max_sequences(self, workload: Workload) -> int | None:
        """LLAMA_MAX_SEQ: llama_context refuses more sequences (src/llama-context.cpp)."""
        return LLAMA_MAX_SEQ

    def context_per_sequence(self, workload: Workload) -> int:
        """n_ctx shared by the sequences."""
        return workload.seq // workload.batch

    def reshape(self, workload: Workload, context: int | None = None, batch: int | None = None) -> Workload:
        """n_ctx = context per sequence * sequences."""
        context = self.context_per_sequence(workload) if context is None else context
        batch = workload.batch if batch is None else batch
        return workload.model_copy(update={"seq": context * batch, "batch": batch})

    def exact_batch(self, workload: Workload) -> int:
        """n_ctx (--seq) is the tokens of all sequences together: one textbook sequence of n_ctx tokens."""
        return 1

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        engine = workload.engine
        lines = [
            f"llama.cpp: --seq is n_ctx, shared by --batch sequences (-np); each gets PAD256(n_ctx / n_seq) cells"
            f"{' (one unified buffer of PAD256(n_ctx))' if engine.kv_unified else ''} (src/llama-context.cpp, src/llama-kv-cache.cpp)",
            "cache types are blocks of 32 values: q8_0 34 B, q4_0 18, q4_1 20, q5_0 22, q5_1 24, iq4_nl 18 (ggml/src/ggml.c type_traits)",
            f"at most {LLAMA_MAX_SEQ} sequences: llama_context refuses n_seq_max > LLAMA_MAX_SEQ (src/llama-context.cpp)",
        ]
        if (ignored := self.ignored_window(model)) is not None:
            lines.append(ignored)
        elif model.mla is None and "sliding" in model.attention_kinds():
            lines.append(
                "SWA layers: as large as the full cache with --swa-full (the default); with --no-swa-full"
                f" PAD256(min(n_ctx_seq, W * streams + n_ubatch {engine.ubatch or LLAMACPP_UBATCH})) (src/llama-kv-cache-iswa.cpp;"
                " exact against the published logs in tests/fixtures/engine_logs/llamacpp_swa.yaml)"
            )
        if model.mla is not None:
            lines.append("MLA GGUFs cache a K-only latent of kv_lora_rank + rope per cell (src/llama-model.cpp)")
        return lines

    def decode_profile(self, gpu: GpuSpec, engine: Engine | None = None) -> DecodeProfile:
        """The GPU's backend decides: Metal and ROCm/Vulkan pay more per layer than CUDA, where
        current builds capture CUDA graphs but on GPUs older than Volta (builds before mid-2024, and Pascal: the
        llamacpp-cuda-legacy mode, kvcalc.decode_profiles.llamacpp_launches_per_kernel)."""
        return profile_for("llamacpp", backend=gpu.backend, legacy_llamacpp=llamacpp_launches_per_kernel(gpu.name))
