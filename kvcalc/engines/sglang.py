"""SGLang (`--engine sglang`): a token pool sized from --mem-fraction-static of the memory free
before the weights load, pages of --page-size tokens (default 1), the hybrid SWA pools, MLA's
K-only latent, and what it logs about the pools.

Rules follow SGLang's python/sglang/srt/model_executor/model_runner_kv_cache_mixin.py at commit
001ccef0 (profile_max_num_token, init_memory, set_num_tokens_hybrid_swa), mem_cache/memory_pool.py
(MHATokenToKVPool, MLATokenToKVPool, ReqToTokenPool), mem_cache/swa_memory_pool.py and
server_args.py (_handle_gpu_memory_settings); checked against its start-up logs in
tests/fixtures/engine_logs/sglang.yaml.

Hybrid models (Mamba-2, Gated DeltaNet and short-conv layers beside attention): the state of one
request, mamba_cache_per_req, in a bf16 conv state and an fp32 SSM state (python/sglang/srt/configs/
mamba_utils.py mamba2_state_dtype, sgl-project/sglang 02e208de; --mamba-ssm-dtype, server_args.py),
takes mamba_full_memory_ratio / (1 + ratio) of the rest as the Mamba pool; the token pool gets what
is left, counted over the full-attention layers only; with the radix cache (the default) at most a
third of the pool's slots run at once (model_runner_kv_cache_mixin.py handle_max_mamba_cache,
profile_max_num_token, init_memory, MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO; 001ccef0)."""

from __future__ import annotations

from collections.abc import Sequence

from kvcalc.decode_profiles import DecodeProfile, profile_for
from kvcalc.engines.base import (
    Budget,
    BudgetTerm,
    EngineLogLine,
    EngineProfile,
    GpuMemory,
    MlaStorage,
    Pool,
    StageLayer,
    StageWeights,
    StateDtypes,
    byte_fraction,
    cdiv,
    gib,
    in_use_terms,
    rotary_table_term,
    term_lines,
    weights_term,
)
from kvcalc.errors import InvalidInput
from kvcalc.gpu_families import runs_cuda
from kvcalc.spec import Engine, GpuSpec, ModelSpec, Workload, cache_dtypes
from kvcalc.state import layer_states, state_parts_bytes
from kvcalc.units import DType, GiB, MiB, format_bytes

SGLANG_COMMIT = "001ccef0"  # model_runner_kv_cache_mixin.py, the rules' source
SGLANG_DTYPES = {DType.fp32, DType.fp16, DType.bf16, DType.fp8, DType.fp8_e4m3, DType.fp8_e5m2, DType.nvfp4}  # fp4_e2m1
SGLANG_CONTEXT_BYTES = int(0.51 * GiB)  # the CUDA context, not free before loading (one GPU)
SGLANG_CONTEXT_TP_BYTES = int(2.1 * GiB)  # with tensor parallelism: NCCL and custom all-reduce buffers too
REQ_TOKEN_PAD = 4  # ReqToTokenPool rows are context_len + 4 int32 slots
REQ_TOKEN_BYTES = 4  # int32
SGLANG_STATE_KINDS = {"mamba2", "gated_deltanet", "short_conv"}  # Mamba2CacheParams (configs/mamba_utils.py)
MAMBA_FULL_MEMORY_RATIO = 0.9  # server_args.py mamba_full_memory_ratio
MAMBA_SLOTS_PER_REQUEST = 3  # MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO: radix cache on, mamba_scheduler_strategy no_buffer
MAMBA_CONV_DTYPE = DType.bf16  # SGLANG_MAMBA_CONV_DTYPE's default
MAMBA_SSM_DTYPE = DType.fp32  # --mamba-ssm-dtype's default (server_args.py), set as SGLANG_MAMBA_SSM_DTYPE


def mamba_cache_per_req(model: ModelSpec, workload: Workload, dtypes: StateDtypes) -> int:
    """One request's state over all state layers on one rank: (conv values * conv bytes + SSM
    values * SSM bytes) * layers (configs/mamba_utils.py BaseLinearStateParams.mamba_cache_per_req).

    >>> m = ModelSpec(name="x", layers=2, heads=2, kv_heads=2, head_dim=8, layer_pattern=["mamba2", "full"],
    ...     state={"mamba2": {"heads": 4, "head_dim": 2, "state_size": 3, "groups": 1, "conv_kernel": 4}})
    >>> mamba_cache_per_req(m, Workload(seq=1), StateDtypes(conv=DType.bf16, recurrent=DType.fp32, why=""))
    180
    """
    return sum(state_parts_bytes(layer_states(model, workload.tp), dtypes.conv, dtypes.recurrent))


def gpu_class(memory_mib: float, tp: int) -> tuple[int, int]:
    """SGLang's chunked_prefill_size and cuda_graph_max_bs for a GPU of `memory_mib` MiB
    (server_args.py _handle_gpu_memory_settings).

    >>> gpu_class(81559, 1), gpu_class(23028, 1)
    ((8192, 256), (2048, 24))
    """
    if memory_mib < 20 * 1024:
        return 2048, 8
    if memory_mib < 35 * 1024:
        return 2048, 24 if tp < 4 else 80
    if memory_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if memory_mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


DRAFT_RESERVED_MIB = {"model": 6 * 1024, "head": 2 * 1024}  # STANDALONE; EAGLE, EAGLE3, NEXTN (server_args.py)


def default_fraction(memory_bytes: int, tp: int, pp: int, draft_kind: str | None = None) -> tuple[float, str]:
    """mem_fraction_static when not given: (gpu_mem - reserved) / gpu_mem, rounded to 3 places,
    reserved = 512 + max(chunked_prefill_size, 2048) * 1.5 + cuda_graph_max_bs * 2 + tp * pp / 8 * 1024
    MiB, at least 10 GiB above 60 GiB, then 6 GiB more for a STANDALONE draft model and 2 GiB more for
    EAGLE-style heads (server_args.py _handle_gpu_memory_settings).

    >>> default_fraction(85520809984, 1, 1)[0], default_fraction(85520809984, 1, 1, "head")[0]
    (0.835, 0.81)
    """
    memory_mib = memory_bytes / MiB
    chunk, graph_bs = gpu_class(memory_mib, tp)
    reserved = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
    floor = memory_mib > 60 * 1024
    if floor:
        reserved = max(reserved, 10 * 1024)
    draft = DRAFT_RESERVED_MIB[draft_kind] if draft_kind else 0
    reserved += draft
    fraction = round((memory_mib - reserved) / memory_mib, 3)
    if fraction <= 0:
        raise InvalidInput(
            f"SGLang's default mem_fraction_static for {memory_mib:,.0f} MiB is {fraction}: it reserves {reserved:,.0f} MiB"
            " for activations and CUDA graphs; give --mem-fraction-static"
        )
    formula = (
        f"default (gpu_mem - reserved) / gpu_mem = ({memory_mib:,.0f} - {reserved:,.0f}) / {memory_mib:,.0f} MiB = {fraction},"
        f" reserved = 512 + max(chunked_prefill_size {chunk}, 2048) * 1.5 + cuda_graph_max_bs {graph_bs} * 2"
        f" + tp * pp / 8 * 1024{', at least 10 GiB' if floor else ''}"
        + (f", + {draft:,} MiB for the draft ({'STANDALONE' if draft_kind == 'model' else 'EAGLE-style'})" if draft else "")
    )
    return fraction, formula


# RotaryEmbedding.__init__: "cache needs to be in FP32 for numerical stability": on CUDA the cos/sin cache stays
# fp32, elsewhere it is cast to the model dtype; registered as a buffer while the model loads
ROTARY_SOURCE = "python/sglang/srt/layers/rotary_embedding.py RotaryEmbedding.__init__ (sglang 00a66ebe)"


def rotary_table(model: ModelSpec, workload: Workload, gpu_name: str | None, activation_dtype: DType) -> BudgetTerm | None:
    """SGLang's RoPE cos/sin tables on one GPU: fp32 on CUDA, as the model builds them elsewhere."""
    forced = (DType.fp32, "fp32 on CUDA") if runs_cuda(gpu_name) else None
    return rotary_table_term(model, workload.seq, activation_dtype, forced, ROTARY_SOURCE)


def version_note(version: str | None) -> str:
    """The --explain line on --sglang-version: kvcalc keeps no SGLang memory rule that differs by
    release, so a given version is recorded (in the JSON's budget.engine and here), not applied.

    >>> version_note("0.5.4.post2")
    'SGLang 0.5.4.post2 (--sglang-version): recorded; the rules follow SGLang at commit 001ccef0, none kept per release'
    """
    follows = f"the rules follow SGLang at commit {SGLANG_COMMIT}, none kept per release"
    return f"SGLang {version} (--sglang-version): recorded; {follows}" if version else f"SGLang release not given: {follows}"


class SGLang(EngineProfile):
    name = "sglang"
    label = "SGLang"
    draft_rule = (
        "the draft worker loads after the target has sized its pool, and keeps a second pool of as many tokens"
        " (model_runner_kv_cache_mixin.py init_memory: draft_runner_cache_size = max_total_num_tokens, 001ccef0):"
        " its weights and that pool come out of the memory mem_fraction_static leaves"
    )
    draft_second_pool = True
    fraction_option = "mem_fraction_static"
    sparse_mla_fp8_layout = True  # NSA fp8 cell: kv_lora_rank + kv_lora_rank / 128 * 4 + rope * 2 (calculate_mla_kv_cache_dim)
    prefix_rule = "the radix cache shares a prefix in whole pages of --page-size (python/sglang/srt/mem_cache/radix_cache.py)"
    max_seqs_option = "max_running_requests"
    calibration_error_percent = 0.4  # scripts/calibration.py: 90th percentile of the held-out |errors|
    sizes_from_cuda_total = True  # model_runner.py init_torch_distributed: get_available_gpu_memory, torch's free memory

    def block_size(self, workload: Workload) -> int:
        """--page-size, default 1."""
        return workload.engine.page_size or 1

    def _swa_pools(self, workload: Workload) -> bool:
        return workload.engine.swa_full_tokens_ratio is not None

    def tokens_per_unit(self, workload: Workload, window: int | None, seq: int, chunked: bool = False) -> int:
        """Whole pages of s tokens; with the hybrid SWA pools a sliding layer holds min(s, W) of them
        (swa_memory_pool.py), else as many as a full layer (disable_hybrid_swa_memory)."""
        page = self.block_size(workload)
        held = min(seq, window) if window and self._swa_pools(workload) else seq
        return cdiv(held, page) * page

    def unmodelled_layers(self, model: ModelSpec) -> str | None:
        kinds = {kind for kind in model.state_kinds() if kind is not None}
        if kinds - SGLANG_STATE_KINDS or "chunked" in model.attention_kinds():
            what = ", ".join(sorted(kinds - SGLANG_STATE_KINDS)) or "chunked-attention"
            return (
                f"kvcalc models SGLang's Mamba pool for {', '.join(sorted(SGLANG_STATE_KINDS))} layers,"
                f" not {model.name}'s {what} layers"
            )
        return None

    def check_supported(self, model: ModelSpec, workload: Workload, dtype: DType) -> None:
        self.refuse_unmodelled_layers(model)
        kinds = {kind for kind in model.state_kinds() if kind is not None}
        if kinds and workload.pp > 1:
            raise InvalidInput(
                "--engine sglang: kvcalc does not model how SGLang splits a hybrid model's Mamba pool over --pp stages"
            )
        if kinds and workload.state_dtype is not None:
            raise InvalidInput("--state-dtype is the textbook's; SGLang takes --mamba-ssm-dtype (its conv state is bf16)")
        if not kinds and (workload.engine.mamba_ssm_dtype or workload.engine.mamba_full_memory_ratio):
            raise InvalidInput(
                f"--mamba-ssm-dtype and --mamba-full-memory-ratio apply to hybrid models; {model.name} keeps no state"
            )
        k_type, v_type = cache_dtypes(model, workload)
        if k_type != v_type:
            raise InvalidInput("--engine sglang keeps K and V in one cache dtype: give --kv-dtype, not --k-dtype / --v-dtype")
        if dtype not in SGLANG_DTYPES:
            raise InvalidInput(f"--engine sglang caches {', '.join(sorted(d.value for d in SGLANG_DTYPES))}, not {dtype.value}")
        if workload.block_size is not None:
            raise InvalidInput("--block-size does not apply to --engine sglang: its pages are --page-size tokens")
        if self._swa_pools(workload) and "sliding" not in model.layer_kinds():
            raise InvalidInput(f"--swa-full-tokens-ratio: {model.name} has no sliding-window layers")

    def state_dtypes(self, model: ModelSpec, workload: Workload) -> StateDtypes:
        """The conv state in bf16 (SGLANG_MAMBA_CONV_DTYPE), the SSM state in --mamba-ssm-dtype,
        float32 by default; the server argument is set as SGLANG_MAMBA_SSM_DTYPE, which overrides the
        config's mamba_ssm_dtype (configs/mamba_utils.py mamba2_state_dtype; server_args.py)."""
        given = workload.engine.mamba_ssm_dtype
        ssm = given or MAMBA_SSM_DTYPE
        return StateDtypes(
            conv=MAMBA_CONV_DTYPE,
            recurrent=ssm,
            why="conv: SGLANG_MAMBA_CONV_DTYPE bfloat16; SSM: "
            + ("--mamba-ssm-dtype" if given else "--mamba-ssm-dtype default float32"),
        )

    def state_rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        ratio = workload.engine.mamba_full_memory_ratio or MAMBA_FULL_MEMORY_RATIO
        return [
            "SGLang: a request's state, mamba_cache_per_req, is conv (channels/tp, k-1) in bf16 + SSM in --mamba-ssm-dtype"
            " (fp32 by default) per state layer (configs/mamba_utils.py, 02e208de)",
            f"the Mamba pool takes ratio/(1+ratio) of the rest, ratio = mamba_full_memory_ratio {ratio:g}: max_mamba_cache_size ="
            " floor(rest * ratio/(1+ratio) / mamba_cache_per_req) slots; the token pool gets the rest over the full-attention"
            f" layers only; at most slots // {MAMBA_SLOTS_PER_REQUEST} requests run at once (radix cache on)"
            f" (model_runner_kv_cache_mixin.py handle_max_mamba_cache, init_memory; {SGLANG_COMMIT})",
        ]

    def _mamba(self, model: ModelSpec, workload: Workload, usable_bytes: int) -> tuple[int, int]:
        """(max_mamba_cache_size, mamba_cache_per_req) for a hybrid model, (0, 0) otherwise."""
        if not any(model.state_kinds()):
            return 0, 0
        per_req = mamba_cache_per_req(model, workload, self.state_dtypes(model, workload))
        ratio = workload.engine.mamba_full_memory_ratio or MAMBA_FULL_MEMORY_RATIO
        return int(max(usable_bytes, 0) * ratio / (1 + ratio)) // per_req, per_req

    def mla_storage(self, engine: Engine) -> MlaStorage:
        """One buffer of kv_lora_rank + rope per token per layer (memory_pool.py MLATokenToKVPool)."""
        return "k_only"

    def max_sequences(self, workload: Workload) -> int | None:
        """--max-running-requests caps the requests running at once."""
        return workload.engine.max_running_requests

    def budget(
        self,
        model: ModelSpec,
        workload: Workload,
        gpu: GpuMemory,
        stages: Sequence[StageWeights],
        activation_dtype: DType,
        utilization: float | None,
        reserve_bytes: int | None,
    ) -> Budget:
        """rest = free after loading - free before loading * (1 - mem_fraction_static)
        = f * (memory - CUDA context - memory in use) - weights, the least over the pipeline stages
        (profile_max_num_token, a MIN all-reduce); --reserve replaces the CUDA context. The free
        memory is torch's (get_available_gpu_memory), so what other processes hold at start-up
        (--memory-in-use) is not free; the default fraction reads nvidia-smi's total
        (utils/common.py get_nvgpu_memory_capacity)."""
        engine, memory, tp, in_use = workload.engine, gpu.total_bytes, workload.tp, gpu.in_use_bytes
        given = engine.mem_fraction_static
        smi = gpu.smi_bytes or memory
        fraction, fraction_formula = (
            (given, "--mem-fraction-static") if given else default_fraction(smi, tp, workload.pp, workload.draft_kind)
        )
        stage = max(stages, key=lambda s: s.weights_bytes)
        rotary = rotary_table(model, workload, gpu.name, activation_dtype)
        loaded = stage.weights_bytes + (rotary.bytes if rotary else 0)
        context = reserve_bytes if reserve_bytes is not None else SGLANG_CONTEXT_TP_BYTES if tp > 1 else SGLANG_CONTEXT_BYTES
        free_before = memory - context - in_use
        static = byte_fraction(free_before, fraction)
        usable = static - loaded
        context_source = (
            "--reserve" if reserve_bytes is not None else "the CUDA context (and NCCL buffers with tp) measured by vLLM on H100"
        )
        terms = [
            BudgetTerm(
                name="not free before loading",
                bytes=context,
                formula=f"{format_bytes(context)}: {context_source}",
                source="model_runner.py init_torch_distributed (min_per_gpu_memory)",
            ),
            *in_use_terms(gpu, "model_runner.py init_torch_distributed: get_available_gpu_memory is torch's free memory"),
            BudgetTerm(
                name=f"not used (1 - mem_fraction_static {fraction:g})",
                bytes=free_before - static,
                formula=f"free before loading * (1 - f) = {free_before:,} * (1 - {fraction}); activations, CUDA graphs and the req_to_token table live here",
                source=f"model_runner_kv_cache_mixin.py profile_max_num_token ({SGLANG_COMMIT})",
            ),
            weights_term(stage),
            *([rotary] if rotary else []),
        ]
        explain = [
            *stage.explain[:-1],
            f"mem_fraction_static = {fraction_formula} (server_args.py _handle_gpu_memory_settings)",
            *(line for term in terms for line in term_lines(term)),
            f"KV = f * (memory - not free before loading{' - in use' if in_use else ''}) - weights{' - rotary' if rotary else ''}"
            f" = {fraction} * ({memory:,} - {context:,}{f' - {in_use:,}' if in_use else ''}) - {stage.weights_bytes:,}"
            f"{f' - {rotary.bytes:,}' if rotary else ''} = {usable:,} B ({format_bytes(usable)})",
            version_note(engine.sglang_version),
        ]
        return Budget(
            memory_bytes=memory,
            utilization=fraction,
            fraction="mem_fraction_static of the memory free before loading",
            allowed_bytes=memory - in_use - (free_before - static),
            reserve_bytes=context + (rotary.bytes if rotary else 0),
            weights_bytes=stage.weights_bytes,
            usable_bytes=usable,
            terms=terms,
            explain=explain,
            stage=stage.stage,
            engine=engine,
        )

    def pools(self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]) -> list[Pool]:
        """max_total_num_tokens = min(rest // cell size, --max-total-tokens) // page * page; with the
        hybrid SWA pools full = total * (F + S) / (F + r * S) and swa = r * full tokens, F and S the
        full and sliding layers' bytes per token (set_num_tokens_hybrid_swa)."""
        slots, per_req = self._mamba(model, workload, usable_bytes)
        if slots or per_req:
            state_layers = sum(1 for kind in model.state_kinds() if kind is not None)
            mamba = Pool(
                name="mamba",
                window=None,
                layers=state_layers,
                bytes_per_token=per_req,
                tokens=slots,
                bytes=slots * per_req,
                per_sequence=MAMBA_SLOTS_PER_REQUEST,
            )
            return [*self._token_pools(workload, usable_bytes - slots * per_req, stage), mamba]
        return self._token_pools(workload, usable_bytes, stage)

    def _token_pools(self, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]) -> list[Pool]:
        engine, page = workload.engine, self.block_size(workload)
        cell = sum(layer.bytes_per_token for layer in stage)
        if not cell:  # state layers only on this stage: no token pool
            return []
        total = max(usable_bytes, 0) // cell
        if engine.max_total_tokens is not None:
            total = min(total, engine.max_total_tokens)
        total = total // page * page
        full = [layer for layer in stage if not (layer.window and self._swa_pools(workload))]
        swa = [layer for layer in stage if layer.window and self._swa_pools(workload)]
        if not swa or not full:
            kind = "swa" if swa else "full"
            window = swa[0].window if swa else None
            return [Pool(name=kind, window=window, layers=len(stage), bytes_per_token=cell, tokens=total, bytes=total * cell)]
        ratio = engine.swa_full_tokens_ratio or 1.0
        full_bpt = sum(layer.bytes_per_token for layer in full)
        swa_bpt = sum(layer.bytes_per_token for layer in swa)
        full_tokens = int(total * cell / (full_bpt + ratio * swa_bpt)) // page * page
        swa_tokens = int(full_tokens * ratio) // page * page
        return [
            Pool(
                name="full",
                window=None,
                layers=len(full),
                bytes_per_token=full_bpt,
                tokens=full_tokens,
                bytes=full_tokens * full_bpt,
            ),
            Pool(
                name="swa",
                window=swa[0].window,
                layers=len(swa),
                bytes_per_token=swa_bpt,
                tokens=swa_tokens,
                bytes=swa_tokens * swa_bpt,
            ),
        ]

    def decode_profile(self, gpu: GpuSpec, engine: Engine | None = None) -> DecodeProfile:
        """--disable-cuda-graph launches every kernel from Python (python/sglang/srt/server_args.py)."""
        return profile_for("sglang", eager=engine.disable_cuda_graph if engine else None, backend=gpu.backend)

    def rules(self, model: ModelSpec, workload: Workload) -> list[str]:
        page = self.block_size(workload)
        lines = [
            f"SGLang: one token pool of whole pages of {page} token{'s' if page > 1 else ''} per layer, Hkv/tp * (d_k + d_v) * bytes"
            f" per token (model_runner_kv_cache_mixin.py get_cell_size_per_token, {SGLANG_COMMIT})",
            "MLA caches one latent of kv_lora_rank + rope per token (memory_pool.py MLATokenToKVPool); fp8 is 1 byte, no scales",
        ]
        if "sliding" in model.layer_kinds():
            if self._swa_pools(workload):
                lines.append(
                    f"hybrid SWA: a full pool and a sliding pool of swa_full_tokens_ratio {workload.engine.swa_full_tokens_ratio}"
                    " times its tokens; sliding layers hold min(s, W) (swa_memory_pool.py, set_num_tokens_hybrid_swa)"
                )
            else:
                lines.append(
                    "sliding layers held as full ones: SGLang disables hybrid SWA memory for Gemma 2/3 and gpt-oss"
                    " (server_args.py); give --swa-full-tokens-ratio (its default 0.8) for a model that uses it"
                )
        return lines

    def _context_len(self, model: ModelSpec, workload: Workload) -> int:
        return model.max_positions or workload.seq

    def log_lines(
        self, model: ModelSpec, workload: Workload, usable_bytes: int, stage: Sequence[StageLayer]
    ) -> list[EngineLogLine]:
        """max_total_num_tokens, each pool's "KV Cache is allocated" line (K and V buffers of
        tokens + page slots, in GiB, which SGLang labels GB), and the req_to_token table it then
        takes from the headroom: max_running_requests * (context_len + 4) int32 slots."""
        pools = self.pools(model, workload, usable_bytes, stage)
        mamba = [pool for pool in pools if pool.per_sequence]
        pools = [pool for pool in pools if not pool.per_sequence]
        page = self.block_size(workload)
        context_len = self._context_len(model, workload)
        total = sum(pool.tokens for pool in pools if pool.name == "full") or (pools[0].tokens if pools else 0)
        requests = workload.engine.max_running_requests or min(max(int(total / context_len * 512), 2048), 4096)
        if mamba:
            requests = min(requests, mamba[0].tokens // MAMBA_SLOTS_PER_REQUEST)
        table = requests * (context_len + REQ_TOKEN_PAD) * REQ_TOKEN_BYTES
        source = "python/sglang/srt/mem_cache/memory_pool.py"
        lines = [
            EngineLogLine(
                engine=self.label,
                name="max_total_num_tokens",
                value=total,
                line=f"max_total_num_tokens={total:,}",
                note="the usable bytes over the cell size, capped by --max-total-tokens, whole pages",
                source=f"model_runner_kv_cache_mixin.py init_memory ({SGLANG_COMMIT})",
            )
        ]
        for pool in mamba:
            lines.append(self._mamba_line(model, workload, pool))
        for pool in pools:
            slots = pool.tokens + page
            if model.mla is not None:
                size = f"KV size: {gib(slots * pool.bytes_per_token)} GB"
            else:
                size = f"K size: {gib(slots * pool.bytes_per_token // 2)} GB, V size: {gib(slots * pool.bytes_per_token // 2)} GB"
            lines.append(
                EngineLogLine(
                    engine=self.label,
                    name=f"{pool.name}_pool_tokens",
                    value=pool.tokens,
                    line=f"KV Cache is allocated. #tokens: {pool.tokens:,}, {size}",
                    note=f"the {pool.name} pool: {pool.layers} layers, {pool.tokens:,} + {page} slots each (sizes in GiB)",
                    source=f"{source} {'MLATokenToKVPool' if model.mla is not None else 'MHATokenToKVPool'}",
                )
            )
        lines.append(
            EngineLogLine(
                engine=self.label,
                name="req_to_token_bytes",
                value=table,
                line=f"max_running_requests={requests:,}",
                note=(
                    f"req_to_token table: {requests:,} requests * (context_len {context_len:,} + 4) * 4 B = {format_bytes(table)},"
                    " from the 1 - mem_fraction_static headroom"
                    + (f"; at most max_mamba_cache_size // {MAMBA_SLOTS_PER_REQUEST} with state layers" if mamba else "")
                ),
                source=f"{source} ReqToTokenPool; model_runner.py init_memory_pool",
            )
        )
        return lines

    def _mamba_line(self, model: ModelSpec, workload: Workload, pool: Pool) -> EngineLogLine:
        """SGLang's "Mamba Cache is allocated" line: conv and SSM tensors of size + 1 slots per
        state layer, in GiB it labels GB (mem_cache/memory_pool.py MambaPool)."""
        dtypes = self.state_dtypes(model, workload)
        conv, ssm = state_parts_bytes(layer_states(model, workload.tp), dtypes.conv, dtypes.recurrent, rows=pool.tokens + 1)
        return EngineLogLine(
            engine=self.label,
            name="max_mamba_cache_size",
            value=pool.tokens,
            line=f"Mamba Cache is allocated. max_mamba_cache_size: {pool.tokens:,}, conv_state size: {conv / GiB:.2f}GB,"
            f" ssm_state size: {ssm / GiB:.2f}GB",
            note=f"floor(rest * ratio/(1+ratio) / {pool.bytes_per_token:,} B per request); {pool.layers} state layers, slots + 1 each",
            source=f"model_runner_kv_cache_mixin.py handle_max_mamba_cache ({SGLANG_COMMIT}); mem_cache/memory_pool.py MambaPool",
        )
