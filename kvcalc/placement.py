"""Where llama.cpp puts a model that does not fit its GPUs whole: layers across GPUs (`-ngl`, `-ts`),
routed experts in host RAM (`--n-cpu-moe`, `-ot`), a Mac's GPU working set; and how fast the split
decodes. Pure functions over integer bytes.

The steps follow llama.cpp's fit (`common/fit.cpp` `common_params_fit_impl`, ggml-org/llama.cpp
08033df0): (1) keep the user's settings when every device keeps its margin (`--fit-target`, 1024 MiB);
(2) only when `-c` is unset, interpolate the context between `--fit-ctx` and the trained one on the
summed memory, rounded down to 256 * streams; (3) fill whole layers back to front, the last device
holding the output layer, which is offloaded first; a MoE with every routed expert on the CPU
("dense-only" layers); (4) a MoE whose dense-only layers all fit: turn them back into full layers
front to back, device by device, then part of one more layer (its up, then its gate, experts; the
rest overflows to the next device or the CPU). So the layers whose experts stay on the CPU are the
last ones, as `llama-fit-params` prints them (`-ot blk\\.(23|...)\\.ffn_..._exps=CPU`), where
`--n-cpu-moe N` means the first N. llama.cpp measures each candidate with a dry-run load; kvcalc
computes the same three figures per device (model, context, compute) from the weights per layer
(kvcalc.weights.layer_weights), the cache per layer (kvcalc.kvcache.layer_cache_bytes) and
`compute_buffer_bytes`. Unlike llama.cpp it also checks host RAM.

Builds differ: before PR #18148 (2025-12-17) `-ngl N` offloaded N repeating layers and the output
layer last (`output_first`); before PR #23861 (2026-05-30) the compute buffer reserved logits for a
whole ubatch (`all_logits_reserved`); before PR #23764 (2026-05-28) the attention mask was reserved in f32
and cast to f16 on each device under flash attention (`f32_mask_reserved`); before PR #12801 (Apr 2025)
an MLA model's cache held K and V per head (`mla_per_head`). MTP layers (`mtp`) count as layers after the model's own, before
the output layer. Not modelled: fit.cpp's LAYER_FRACTION_ATTN fallback (a MoE layer whose up experts
do not fit keeps only its attention), the MTP draft context's own cache.

Several GPUs follow llama.cpp's default split mode, `-sm layer` (LAYER_SPLIT_SOURCE): each device holds whole
layers, their weights and their KV cache and recurrent state (KV_DEVICE_SOURCE), never part of a layer's heads, so a
device's cache is the single-GPU cache of its layers, whatever the head count. The other modes are not modelled
(SPLIT_MODES_SOURCE): `-sm row` (deprecated) splits only the dense matrices by rows over the devices, the layers'
other tensors and caches staying where the layer split puts them, and fit.cpp gives up on it; `-sm tensor`
(experimental, PR #19378) splits weights and KV by heads over a "meta device", needs flash attention and an
unquantized cache, refuses --fit and a list of architectures (DeepSeek2, Mamba, Jamba, Nemotron-H...).
"""

from __future__ import annotations

from typing import Literal

from kvcalc.base import Frozen
from kvcalc.decode_profiles import DecodeProfile, format_class, stored_format_class, terms
from kvcalc.engines import profile as engine_profile
from kvcalc.engines.llamacpp import LLAMACPP_PAD, LLAMACPP_UBATCH
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import layer_cache_bytes, layer_caches, settled, state_layout, tokens_held
from kvcalc.latency import expected_experts_touched, recurrent_layers
from kvcalc.spec import GpuSpec, ModelSpec, Workload
from kvcalc.units import PACKING, GiB, MiB, format_bytes
from kvcalc.weights import LayerWeights, WeightFormat, layer_weights

FIT_SOURCE = "common/fit.cpp common_params_fit_impl, ggml-org/llama.cpp 08033df0"
LAYER_SPLIT_SOURCE = (
    "src/llama-model.cpp llama_model::load_tensors get_layer_buft_list: unit il on the first device whose cumulative"
    " -ts share (default: free memory) exceeds (il - i_gpu_start) / n_gpu_layers (ggml-org/llama.cpp a5410f04; the same"
    " rule in 2026 master, i_gpu_start moved by PR #18148)"
)
# what a single-GPU budget, fit report or decode estimate describes when llama.cpp splits the layers over several GPUs
ONE_GPU_SCOPE = "one GPU holding the whole model"
KV_DEVICE_SOURCE = (
    "src/llama-kv-cache.cpp llama_kv_cache::llama_kv_cache: layer il's K and V in a buffer of model.dev_layer(il),"
    " one 'KV buffer size' line per device (ggml-org/llama.cpp 3514e9f6); the recurrent state likewise"
    " (src/llama-memory-recurrent.cpp, 'RS buffer size')"
)
SPLIT_MODES_SOURCE = "docs/multi-gpu.md (PR #22729), common/arg.cpp -sm none|layer|row|tensor, ggml-org/llama.cpp 5815cb84"
OUTPUT_FIRST_SOURCE = (
    "src/llama-model.cpp i_gpu_start = max(n_layer_all + 1 - n_gpu_layers, 0), ggml-org/llama.cpp PR #18148 (2025-12-17)"
)
LOGITS_SOURCE = (
    "src/llama-context.cpp graph_reserve: n_outputs = n_outputs_max, one row per sequence in llama-server,"
    " ggml-org/llama.cpp PR #23861 (2026-05-30; before it every token of the ubatch)"
)
MASK_SOURCE = (
    "src/llama-graph.cpp build_attn_inp_kq_mask: one mask input of n_kv x n_ubatch per cache kind (iSWA: two), f16 under"
    " flash attention, else f32; before ggml-org/llama.cpp PR #23764 (2026-05-28) f32 and ggml_cast to f16"
)
MLA_PER_HEAD_SOURCE = (
    "src/llama-kv-cache.cpp before ggml-org/llama.cpp PR #12801 (Apr 2025): k_l of n_head_kv * n_embd_head_k and v_l of"
    " n_head_kv * n_embd_head_v per cell (DeepSeek's GGUF: 128 x 192 and 128 x 128), not MLA's latent"
)
DEFAULT_FIT_TARGET = 1024 * MiB  # --fit-target: MiB left free on every device (common/arg.cpp)
DEFAULT_FIT_CTX = 4096  # --fit-ctx: the smallest context fit reduces to
F32 = 4  # llama.cpp computes activations and logits in f32
CPU = -1  # a unit or an overflow in host memory rather than on a device
EXPERT_PATTERN = r"ffn_(up|down|gate_up|gate)_(ch|)exps"  # the MoE tensors fit.cpp moves to the CPU
Partial = Literal["up", "gate"]  # fit.cpp's LAYER_FRACTION_UP / _GATE: attention + up (+ gate) on the GPU
PARTIAL_OVERRIDE = {"up": "ffn_(gate|gate_up|down).*", "gate": "ffn_down.*"}  # what each moves off (get_overflow_pattern)


class PlacementDevice(Frozen):
    """One GPU as the plan sees it: the bytes it offers (a Mac: its GPU working set), the margin to
    keep free, and its bandwidth for the speed of the split."""

    name: str
    free_bytes: int
    margin_bytes: int
    bandwidth_bytes_per_s: int
    backend: str = "cuda"
    unified: bool = False  # Apple silicon: the GPU's bytes come out of the same RAM as the host's


class PartialLayer(Frozen):
    """One layer whose routed experts are split (fit.cpp's partial layer): attention and its up
    (`up`), or up and gate (`gate`), experts on its device; the rest on `overflow` (the next
    device's index, or CPU = -1)."""

    layer: int
    kind: Partial
    overflow: int = CPU


class PlacementRequest(Frozen):
    """What the user fixed (None: left to the plan), as llama-server spells it, and the build's rules."""

    ctx_size: int | None = None  # -c; None: unset, the trained context, reducible down to fit_ctx
    fit_ctx: int = DEFAULT_FIT_CTX
    n_gpu_layers: int | None = None  # -ngl, counting the output layer (and MTP layers)
    n_cpu_moe: int | None = None  # --n-cpu-moe: the first N layers' routed experts stay on the CPU
    expert_layers_on_cpu: list[int] | None = None  # -ot blk\.(i|j)\.ffn_*_exps=CPU: these layers' experts
    partial_layer: PartialLayer | None = None  # -ot blk\.i\.ffn_(gate|gate_up|down).*=CPU: one split layer
    tensor_split: list[float] | None = None  # -ts: a share of the layers per device
    ram_bytes: int | None = None  # host memory free for the model (llama.cpp never checks it)
    ram_bandwidth_bytes_per_s: int | None = None
    mmap: bool = True  # --no-mmap: False
    mtp: bool = False  # the model's MTP layers loaded (--spec-type draft-mtp with a GGUF that carries them)
    output_first: bool = True  # False: builds before PR #18148, the output layer offloaded last
    all_logits_reserved: bool = False  # True: builds before PR #23861, logits reserved for the whole ubatch
    f32_mask_reserved: bool = False  # True: builds before PR #23764, the mask reserved in f32 and cast to f16 (flash attention)
    mla_per_head: bool = False  # True: builds before PR #12801, an MLA model's cache holds K and V per head
    resident_bytes: int = 0  # what else the first GPU holds: a projector (--mmproj), a draft model (--model-draft)
    resident_explain: list[str] = []


class DevicePlan(Frozen):
    """One GPU's share of the plan (llama.cpp's memory breakdown: model + context + compute)."""

    name: str
    first_layer: int  # the first layer it holds (the layer count, MTP layers included, is the output layer)
    layers: int  # layers it holds, counting the output layer
    weights_bytes: int
    kv_bytes: int  # its layers' KV cache and recurrent state
    state_bytes: int = 0  # the recurrent state's share of kv_bytes (llama.cpp's "RS buffer")
    compute_bytes: int
    resident_bytes: int  # a projector or draft model beside the layers (the first GPU)
    total_bytes: int
    free_bytes: int
    target_bytes: int  # free less the margin: what the plan may use
    fits: bool


class HostPlan(Frozen):
    """What stays in host memory: the input table, the layers and experts left on the CPU (mmap'd
    unless --no-mmap), their cache, the host compute and output buffers; checked against --ram."""

    weights_bytes: int
    kv_bytes: int  # the cache and recurrent state of the layers left on the CPU
    state_bytes: int = 0  # the recurrent state's share of kv_bytes
    compute_bytes: int
    output_bytes: int
    total_bytes: int
    ram_bytes: int | None
    mapped: bool
    fits: bool


class Placement(Frozen):
    """A llama.cpp placement: the flags, what each device and the host hold, and how it was decided."""

    n_gpu_layers: int
    n_cpu_moe: int  # layers whose routed experts all stay in host memory
    cpu_expert_layers: list[int] = []  # which (the first N with --n-cpu-moe N; the last ones from fit.cpp)
    partial_layers: list[PartialLayer] = []  # layers whose experts are split (fit.cpp: one per device at most)
    tensor_split: list[int]  # layers per device
    mtp_layers: int = 0  # MTP layers placed after the model's own (each one more -ngl layer)
    output_first: bool = True  # the output layer was offloaded first (builds from PR #18148)
    ctx_size: int
    devices: list[DevicePlan]
    host: HostPlan
    overrides: list[str]  # -ot patterns
    command: str  # llama-server arguments that realise the plan
    fits: bool
    steps: list[str]  # what each step of the fit decided
    log_lines: list[str]  # what llama.cpp would print
    explain: list[str]


def working_set_bytes(ram_bytes: int, wired_limit_bytes: int | None = None) -> int:
    """The GPU working set Metal reports on a Mac (`recommendedMaxWorkingSetSize`): `iogpu.wired_limit_mb`
    when set, else two thirds of RAM up to 32 GiB and three quarters above, as llama.cpp logs show on
    macOS before 15 (shared/reference/llamacpp-placement.md; recent macOS gives 74-84%: set --wired-limit).

    >>> working_set_bytes(16 * GiB) // MiB, working_set_bytes(64 * GiB) // MiB, working_set_bytes(128 * GiB, 112 * GiB) // GiB
    (10922, 49152, 112)
    """
    if wired_limit_bytes is not None:
        return wired_limit_bytes
    return ram_bytes * 2 // 3 if ram_bytes <= 32 * GiB else ram_bytes * 3 // 4


def kq_mask_bytes(cells: int, ubatch: int, flash_attn: bool, f32_reserved: bool, on_device: bool) -> int:
    """One attention mask (n_kv `cells` x n_ubatch), a graph input: the host's compute buffer holds
    it (ggml-backend.c puts inputs on the CPU backend), each device that runs a layer attending with
    it holds a copy (`on_device`), and where a build reserved it in f32 under flash attention also its
    f16 cast (src/llama-graph.cpp build_attn_inp_kq_mask; PR #23764 reserves it in f16 directly).

    >>> kq_mask_bytes(262144, 512, True, True, False) // MiB, kq_mask_bytes(262144, 512, True, True, True) // MiB
    (512, 768)
    >>> kq_mask_bytes(262144, 512, True, False, True) // MiB, kq_mask_bytes(4096, 512, False, False, True) // MiB
    (256, 8)
    """
    values = cells * ubatch
    if not flash_attn:
        return F32 * values
    if not f32_reserved:
        return 2 * values
    return F32 * values + (2 * values if on_device else 0)


def compute_buffer_bytes(
    model: ModelSpec, ctx: int, ubatch: int, flash_attn: bool, holds_output: bool, output_rows: int, mask_bytes: int = 0
) -> int:
    """One device's compute buffer: the largest set of f32 activations one ubatch keeps alive at once
    (ggml's graph allocator reuses memory between ops, so only the peak counts, and the layers run
    one after another). Candidates, in 4 B values:
    - the MLP: the layer's input kept for the residual, its normed copy that gate and up both read,
      and their outputs: n_ubatch * (2 * n_ff + 2 * n_embd) (MoE: n_ff of the k active experts);
    - on the device that computes the output: the logits of `output_rows` rows and the final hidden
      state of the ubatch, output_rows * n_vocab + n_ubatch * n_embd. llama-server reserves one row
      per sequence since PR #23861 (2026-05-30); earlier builds every token of the ubatch;
    - without flash attention, the attention scores beside the layer's input and output:
      n_ubatch * (n_ctx * n_head + 2 * n_embd).
    The attention masks (`mask_bytes`, kq_mask_bytes) stay allocated while any layer still attends, so
    they add to the layers' candidates; ggml-alloc frees them after the last attention, before the output.

    >>> from kvcalc.spec import ModelSpec
    >>> m = ModelSpec(name="x", layers=32, heads=32, kv_heads=8, hidden=4096, intermediate=14336, vocab=128256)
    >>> compute_buffer_bytes(m, 8192, 512, True, True, 512) / MiB, compute_buffer_bytes(m, 8192, 512, True, True, 1) / MiB
    (258.5, 72.0)
    >>> compute_buffer_bytes(m, 8192, 512, False, False, 1) / MiB
    528.0
    """
    hidden, vocab = model.hidden or 0, model.vocab or 0
    ffn = model.intermediate or 0
    if model.moe is not None:
        ffn = max(ffn, model.moe.experts_per_token * model.moe.expert_intermediate)
    values = [F32 * ubatch * (2 * ffn + 2 * hidden) + mask_bytes]
    if holds_output:
        values.append(F32 * (output_rows * vocab + ubatch * hidden))
    if not flash_attn:
        values.append(F32 * ubatch * (ctx * model.heads + 2 * hidden) + mask_bytes)
    return max(values)


class _Layout(Frozen):
    """The bytes each unit needs: unit i < n is layer i (MTP layers last), unit n the output layer."""

    weights: LayerWeights  # MTP layers appended to layers and experts
    kv: list[int]  # per layer; an MTP layer's cache is the draft context's, not counted here
    state: list[int]  # per layer, the recurrent state's share of kv (llama_memory_recurrent's RS buffer)
    ctx: int
    ubatch: int
    flash_attn: bool
    output_rows: int  # logits rows the compute buffer reserves
    layer_masks: list[str | None]  # per layer, the cache kind whose mask it attends with (None: no attention)
    mask_cells: dict[str, int]  # n_kv of each kind's mask
    f32_mask: bool = False  # the mask reserved in f32 and cast (builds before PR #23764)
    mtp: int = 0

    @property
    def n_layers(self) -> int:
        return len(self.kv)


def _with_mtp(model: ModelSpec, fmt: WeightFormat, w: LayerWeights) -> LayerWeights:
    """`w` with the model's MTP layers appended, each like its last layer (kvcalc.weights.mtp_params: the
    decoder layer plus eh_proj 2h x h and three norms, in the layers' format; the table and LM head are
    the model's own)."""
    h = model.hidden or 0
    extra = PACKING[fmt.dtype].bytes_for(2 * h * h + 3 * h)
    n = model.mtp_layers
    return w.model_copy(
        update={
            "layers": [*w.layers, *[w.layers[-1] + extra] * n],
            "experts": [*w.experts, *[w.experts[-1]] * n],
            "explain": w.explain + f"; {n} MTP layer(s) like the last, plus eh_proj and norms ({extra:,} B each)",
        }
    )


def _layout(model: ModelSpec, workload: Workload, fmt: WeightFormat, ctx: int, build: PlacementRequest) -> _Layout:
    """The units' bytes at context `ctx` under the build's rules (`build`: MTP loaded, logits rows, mask, MLA cache)."""
    engine = workload.engine
    mtp = build.mtp
    if mtp and not model.mtp_layers:
        raise InvalidInput(f"{model.name} has no MTP layers (mtp_layers 0): llama.cpp loads none")
    if build.mla_per_head and model.mla is None:
        raise InvalidInput(f"{model.name} has no MLA: a per-head MLA cache (builds before PR #12801) does not apply")
    w = layer_weights(model, fmt)
    cached = model.model_copy(update={"mla": None}) if build.mla_per_head else model  # K and V per head (MLA_PER_HEAD_SOURCE)
    at_ctx = workload.model_copy(update={"seq": ctx})
    kv = layer_cache_bytes(cached, at_ctx)
    at_ctx = settled(cached, at_ctx)
    # every sequence's state, the part of layer_cache_bytes llama.cpp allocates apart ("RS buffer size")
    state = [at_ctx.batch * b for b in state_layout(cached, at_ctx).layer_bytes]
    caches = layer_caches(cached, at_ctx.tp, at_ctx.engine)
    layer_masks: list[str | None] = [c.kind if c.kind != "none" else None for c in caches]
    mask_cells = {c.kind: tokens_held(c, at_ctx) for c in caches if c.kind != "none"}
    if mtp:
        w = _with_mtp(model, fmt, w)
        kv = [*kv, *[0] * model.mtp_layers]
        state = [*state, *[0] * model.mtp_layers]
        layer_masks += [None] * model.mtp_layers  # the MTP layer attends in the draft context's own graph
    ubatch = min(engine.ubatch or LLAMACPP_UBATCH, ctx)
    return _Layout(
        weights=w,
        kv=kv,
        state=state,
        ctx=ctx,
        ubatch=ubatch,
        flash_attn=engine.flash_attn is not False,  # -fa auto turns it on where the backend supports it
        output_rows=ubatch if build.all_logits_reserved else workload.batch,
        layer_masks=layer_masks,
        mask_cells=mask_cells,
        f32_mask=build.f32_mask_reserved,
        mtp=model.mtp_layers if mtp else 0,
    )


def _mask_bytes(layout: _Layout, kinds: set[str], on_device: bool) -> int:
    """The masks of these cache kinds, as a device (or the CPU running layers) holds them, or as the host's inputs."""
    return sum(kq_mask_bytes(layout.mask_cells[k], layout.ubatch, layout.flash_attn, layout.f32_mask, on_device) for k in kinds)


def _state_on(layout: _Layout, a: _Assign, where: int) -> int:
    """The recurrent state of the layers at `where` (a device, or CPU)."""
    return sum(state for unit, state in enumerate(layout.state) if a.device[unit] == where)


def _kinds_on(layout: _Layout, a: _Assign, where: int) -> set[str]:
    """The cache kinds whose masks the layers at `where` (a device, or CPU) attend with."""
    return {kind for unit, kind in enumerate(layout.layer_masks) if kind is not None and a.device[unit] == where}


class _Assign(Frozen):
    """Where each unit sits (a device index, or CPU), whose routed experts stay in host memory, and
    the layers whose experts are split."""

    device: list[int]
    cpu_experts: frozenset[int] = frozenset()
    partials: tuple[PartialLayer, ...] = ()


def _kept(model: ModelSpec, experts: int, kind: Partial) -> int:
    """The bytes of a partial layer's experts that stay on its device: its up matrices (and gate's),
    each a third of a gated MLP's experts (a half of a plain one's, which has no gate)."""
    matrices = 3 if model.mlp == "gated" else 2
    return experts * (1 if kind == "up" or matrices == 2 else 2) // matrices


def _expert_shares(model: ModelSpec, layout: _Layout, a: _Assign, unit: int) -> list[tuple[int, int]]:
    """(place, bytes) of unit `unit`'s routed experts: with its layer, in host memory, or split."""
    experts = layout.weights.experts[unit] if unit < layout.n_layers else 0
    home = a.device[unit]
    if not experts:
        return []
    if unit in a.cpu_experts or home == CPU:
        return [(CPU, experts)]
    for p in a.partials:
        if p.layer == unit:
            kept = _kept(model, experts, p.kind)
            return [(home, kept), (p.overflow, experts - kept)]
    return [(home, experts)]


def _offload_order(n_layers: int, output_first: bool) -> list[int]:
    """The units in the order a growing -ngl offloads them: the output layer first, then the layers back
    to front (src/llama-model.cpp since PR #18148); before it the layers, then the output layer."""
    layers = list(range(n_layers - 1, -1, -1))
    return [n_layers, *layers] if output_first else [*layers, n_layers]


def _assign(
    layout: _Layout, counts: list[int], output_first: bool, cpu_experts: frozenset[int] = frozenset(),
    partials: tuple[PartialLayer, ...] = (),
) -> _Assign:  # fmt: skip
    """The units -ngl sum(counts) offloads, given to the devices in layer order, `counts` each."""
    n = layout.n_layers
    on_gpu = sorted(_offload_order(n, output_first)[: sum(counts)])
    device, taken = [CPU] * (n + 1), 0
    for d, count in enumerate(counts):
        for unit in on_gpu[taken : taken + count]:
            device[unit] = d
        taken += count
    return _Assign(device=device, cpu_experts=cpu_experts, partials=partials)


def _tally(model: ModelSpec, layout: _Layout, a: _Assign, n_devices: int) -> tuple[list[int], list[int], int, int]:
    """Weights and cache per device, and in host memory (the input table always there)."""
    n = layout.n_layers
    w = layout.weights
    weights, kv = [0] * n_devices, [0] * n_devices
    host_weights, host_kv = w.embeddings, 0
    for unit in range(n + 1):
        own, cache = (w.output, 0) if unit == n else (w.layers[unit], layout.kv[unit])
        place = a.device[unit]
        if place == CPU:
            host_weights, host_kv = host_weights + own, host_kv + cache
        else:
            weights[place] += own
            kv[place] += cache
        for where, size in _expert_shares(model, layout, a, unit):
            if where == CPU:
                host_weights += size
            else:
                weights[where] += size
    return weights, kv, host_weights, host_kv


def _device_compute(model: ModelSpec, layout: _Layout, a: _Assign, d: int) -> int:
    """Device d's compute buffer, when it holds any unit (every device pays one)."""
    if d not in a.device:
        return 0
    holds_output = a.device[layout.n_layers] == d
    masks = _mask_bytes(layout, _kinds_on(layout, a, d), True)
    return compute_buffer_bytes(model, layout.ctx, layout.ubatch, layout.flash_attn, holds_output, layout.output_rows, masks)


def _device_totals(model: ModelSpec, layout: _Layout, a: _Assign, devices: list[PlacementDevice], resident: int) -> list[int]:
    weights, kv, _, _ = _tally(model, layout, a, len(devices))
    return [weights[d] + kv[d] + _device_compute(model, layout, a, d) + (resident if d == 0 else 0) for d in range(len(devices))]


def _unit_bytes(layout: _Layout, unit: int, experts_on_device: bool) -> int:
    """Device bytes of one whole unit: the layer's own weights and cache (and its experts), or the output layer."""
    w = layout.weights
    if unit == layout.n_layers:
        return w.output
    return w.layers[unit] + layout.kv[unit] + (w.experts[unit] if experts_on_device else 0)


def _pack(
    model: ModelSpec, layout: _Layout, devices: list[PlacementDevice], dense_only: bool, resident: int, output_first: bool
) -> list[int]:
    """Whole units per device, filled back to front (fit.cpp step 3): the last device takes the output
    layer and as many layers before it as stay within its target, then the device before it, and so
    on; what is left runs on the CPU. `dense_only`: every routed expert stays in host memory."""
    order = _offload_order(layout.n_layers, output_first)
    counts, taken = [0] * len(devices), 0
    for d in reversed(range(len(devices))):
        device = devices[d]
        holds_output = taken < len(order) and order[taken] == layout.n_layers
        masks = _mask_bytes(layout, set(layout.mask_cells), True)  # a device that takes layers holds their masks
        used = compute_buffer_bytes(model, layout.ctx, layout.ubatch, layout.flash_attn, holds_output, layout.output_rows, masks)
        used += resident if d == 0 else 0
        target = device.free_bytes - device.margin_bytes
        while taken < len(order) and used + _unit_bytes(layout, order[taken], not dense_only) <= target:
            used += _unit_bytes(layout, order[taken], not dense_only)
            counts[d] += 1
            taken += 1
    return counts


def _default_split(devices: list[PlacementDevice], ngl: int, shares: list[float] | None) -> list[int]:
    """Layers per device for -ngl `ngl` and a split (default: each device's free memory), as
    llama_model::load_tensors assigns them: unit il goes to the first device whose cumulative share
    exceeds (il - i_gpu_start) / ngl (src/llama-model.cpp)."""
    weights = shares or [float(d.free_bytes) for d in devices]
    if len(weights) != len(devices) or any(w < 0 for w in weights) or not sum(weights):
        raise InvalidInput(
            f"--tensor-split gives {len(weights)} non-negative shares: give one per --gpu ({len(devices)}), not all 0"
        )
    total, cumulative, running = sum(weights), [], 0.0
    for w in weights:
        running += w / total
        cumulative.append(running)
    counts = [0] * len(devices)
    for i in range(ngl):
        counts[next((d for d, c in enumerate(cumulative) if i / ngl < c), len(devices) - 1)] += 1
    return counts


def _evaluate(
    model: ModelSpec, workload: Workload, layout: _Layout, devices: list[PlacementDevice], request: PlacementRequest, a: _Assign,
) -> tuple[list[DevicePlan], HostPlan]:  # fmt: skip
    """Each device's and the host's bytes for the assignment `a`."""
    n = layout.n_layers
    weights, kv, weights_host, kv_host = _tally(model, layout, a, len(devices))
    plans = []
    for d, device in enumerate(devices):
        held = [u for u in range(n + 1) if a.device[u] == d]
        compute = _device_compute(model, layout, a, d)
        resident = request.resident_bytes if d == 0 else 0
        total = weights[d] + kv[d] + compute + resident
        target = device.free_bytes - device.margin_bytes
        plans.append(
            DevicePlan(
                name=device.name, first_layer=held[0] if held else 0, layers=len(held), weights_bytes=weights[d], kv_bytes=kv[d],
                state_bytes=_state_on(layout, a, d),
                compute_bytes=compute, resident_bytes=resident, total_bytes=total, free_bytes=device.free_bytes,
                target_bytes=target, fits=total <= target,
            )
        )  # fmt: skip
    busy = CPU in a.device or bool(a.cpu_experts) or any(p.overflow == CPU for p in a.partials) or not devices
    on_cpu = _kinds_on(layout, a, CPU)
    masks_host = _mask_bytes(layout, set(layout.mask_cells) - on_cpu, False) + _mask_bytes(layout, on_cpu, True)
    compute_host = (
        compute_buffer_bytes(
            model, layout.ctx, layout.ubatch, layout.flash_attn, a.device[n] == CPU, layout.output_rows, masks_host
        )
        if busy
        else F32 * layout.ubatch * (model.hidden or 0) + masks_host  # the input rows gathered from token_embd, and the masks
    )
    output_host = F32 * (model.vocab or 0) * workload.batch  # logits of one token per sequence (llama_context output buffer)
    total_host = weights_host + kv_host + compute_host + output_host
    unified = sum(p.total_bytes for p, dev in zip(plans, devices, strict=True) if dev.unified)
    ram = request.ram_bytes
    host = HostPlan(
        weights_bytes=weights_host, kv_bytes=kv_host, state_bytes=_state_on(layout, a, CPU), compute_bytes=compute_host,
        output_bytes=output_host,
        total_bytes=total_host, ram_bytes=ram, mapped=request.mmap, fits=ram is None or total_host + unified <= ram,
    )  # fmt: skip
    return plans, host


def _interpolated_ctx(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest,
    n_ctx_max: int, streams: int, steps: list[str],
) -> int:  # fmt: skip
    """fit.cpp step 2: n_ctx = n_min + (n_max - n_min) * (sum free - sum margin - used_min) /
    (used_max - used_min), rounded down to a multiple of 256 * streams and never below --fit-ctx *
    streams; on several devices the target first loses (n_devices + 1) * model_per_layer / (2
    dense | 6 MoE) for whole-layer rounding."""
    n_min = request.fit_ctx * streams
    if n_ctx_max <= n_min:
        steps.append(f"context {n_ctx_max:,}: the trained context is not above --fit-ctx {n_min:,}, kept")
        return n_ctx_max

    def used(ctx: int) -> tuple[int, int, int]:
        layout = _layout(model, workload, fmt, ctx, request)
        units = layout.n_layers + 1
        a = _assign(layout, _default_split(devices, units, request.tensor_split), request.output_first)
        plans, _ = _evaluate(model, workload, layout, devices, request, a)
        return sum(p.total_bytes for p in plans), sum(p.weights_bytes for p in plans), units

    used_max, model_bytes, units = used(n_ctx_max)
    used_min, _, _ = used(n_min)
    target = sum(d.free_bytes - d.margin_bytes for d in devices)
    if len(devices) > 1:
        target -= (len(devices) + 1) * (model_bytes // units) // (6 if model.moe else 2)
    if target > used_min and used_max > used_min:
        ctx = n_min + (n_ctx_max - n_min) * (target - used_min) // (used_max - used_min)
        align = LLAMACPP_PAD * streams
        ctx = max(ctx - ctx % align, n_min)
    else:
        ctx = n_min
    steps.append(
        f"context reduced from {n_ctx_max:,} to {ctx:,}: {n_min:,} + ({n_ctx_max:,} - {n_min:,}) * (target {target:,} B"
        f" - used at min {used_min:,} B) / (used at max {used_max:,} B - {used_min:,} B), down to a multiple of"
        f" {LLAMACPP_PAD * streams} ({FIT_SOURCE} step 2)"
    )
    return min(ctx, n_ctx_max)


def _user_experts(model: ModelSpec, request: PlacementRequest, n_layers: int) -> tuple[frozenset[int], tuple[PartialLayer, ...]]:
    """The experts the user's flags keep in host memory: --n-cpu-moe N (the first N layers'), the
    layers of an -ot pattern, and a split layer."""
    for flag, value in (("--n-gpu-layers", request.n_gpu_layers), ("--n-cpu-moe", request.n_cpu_moe)):
        if value is not None and value < 0:
            raise InvalidInput(f"{flag} must be 0 or more, got {value}")
    wants = request.n_cpu_moe or request.expert_layers_on_cpu or request.partial_layer
    if wants and model.moe is None:
        raise InvalidInput(f"--n-cpu-moe moves routed experts, and {model.name} has none")
    layers = set(range(min(request.n_cpu_moe or 0, n_layers)))
    for layer in [*(request.expert_layers_on_cpu or []), *([request.partial_layer.layer] if request.partial_layer else [])]:
        if not 0 <= layer < n_layers:
            raise InvalidInput(f"layer {layer} of an expert override: {model.name} has layers 0 to {n_layers - 1}")
    layers |= set(request.expert_layers_on_cpu or [])
    partials = (request.partial_layer,) if request.partial_layer is not None else ()
    return frozenset(layers - {p.layer for p in partials}), partials


def plan(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest
) -> Placement:
    """llama.cpp's placement of `model` on `devices` and the host (see the module's docstring)."""
    if not engine_profile(workload.engine).places_layers:
        raise InvalidInput("a placement across GPUs and host RAM follows llama.cpp: add --engine llamacpp")
    if workload.tp != 1 or workload.pp != 1:
        raise InvalidInput(
            "llama.cpp splits whole layers over its GPUs (-sm layer): give them as --gpu (or --tp N with one --gpu), not --pp"
        )
    streams = 1 if workload.engine.kv_unified else workload.batch
    steps: list[str] = []
    user_fixed = any(
        value is not None
        for value in (
            request.n_gpu_layers,
            request.n_cpu_moe,
            request.tensor_split,
            request.expert_layers_on_cpu,
            request.partial_layer,
        )
    )
    if request.ctx_size is not None:
        ctx = request.ctx_size
    else:
        ctx = (model.max_positions or workload.seq) * streams
        steps.append(f"-c unset: the trained context {ctx:,} (n_ctx_train * {streams} streams)")
    layout = _layout(model, workload, fmt, ctx, request)
    units = layout.n_layers + 1
    cpu_experts, partials = _user_experts(model, request, layout.n_layers)
    ngl = min(request.n_gpu_layers if request.n_gpu_layers is not None else units, units)
    counts = _default_split(devices, ngl, request.tensor_split) if devices else []
    a = _assign(layout, counts, request.output_first, cpu_experts, partials)
    plans, host = _evaluate(model, workload, layout, devices, request, a)
    if user_fixed:
        steps.append(
            "placement flags given (-ngl, --n-cpu-moe, -ot or -ts): kept as given (llama.cpp's fit aborts then; kvcalc reports them)"
        )
    elif all(p.fits for p in plans):
        steps.append(f"every device keeps its margin with all {units} layers offloaded: no change ({FIT_SOURCE} step 1)")
    else:
        if request.ctx_size is None:
            ctx = _interpolated_ctx(model, workload, fmt, devices, request, ctx, streams, steps)
            layout = _layout(model, workload, fmt, ctx, request)
            a = _assign(layout, _default_split(devices, units, request.tensor_split), request.output_first)
            plans, host = _evaluate(model, workload, layout, devices, request, a)
        if not all(p.fits for p in plans):
            a = _fill(model, layout, devices, request, steps)
            plans, host = _evaluate(model, workload, layout, devices, request, a)
    return _placement(model, workload, layout, devices, request, a, plans, host, steps)


def _fill(
    model: ModelSpec, layout: _Layout, devices: list[PlacementDevice], request: PlacementRequest, steps: list[str]
) -> _Assign:
    """fit.cpp steps 3-4: whole layers back to front (a MoE's with every routed expert in host memory);
    then, when a MoE's dense-only layers all fit, layers turned back into full ones front to back."""
    units = layout.n_layers + 1
    moe = model.moe is not None
    dense_only = frozenset(range(layout.n_layers)) if moe else frozenset()
    counts = _pack(model, layout, devices, moe, request.resident_bytes, request.output_first)
    what = "every routed expert on the CPU, layers" if moe else "layers"
    steps.append(f"{what} filled back to front, the output layer first: {sum(counts)}/{units} offloaded ({FIT_SOURCE} step 3)")
    a = _assign(layout, counts, request.output_first, dense_only)
    if not moe or sum(counts) < units:
        return a
    return _to_full_layers(model, layout, devices, request.resident_bytes, a, steps)


def _to_full_layers(
    model: ModelSpec, layout: _Layout, devices: list[PlacementDevice], resident: int, a: _Assign, steps: list[str]
) -> _Assign:
    """fit.cpp step 4: device by device from the first, the front dense-only layers become full layers
    on it while it stays within its target; then part of one more layer: its up experts on the device
    (LAYER_FRACTION_UP), then its gate's too (_GATE), the rest on the next device or the CPU, both
    within their targets. The layers left dense-only keep their experts on the CPU: the last ones."""
    targets = [d.free_bytes - d.margin_bytes for d in devices]
    remaining = sorted(a.cpu_experts)
    first_dense = min(d for d in a.device if d != CPU)

    def fits(trial: _Assign, *ds: int) -> bool:
        totals = _device_totals(model, layout, trial, devices, resident)
        return all(totals[d] <= targets[d] for d in ds if d != CPU)

    for d in range(first_dense + 1):
        while remaining:
            unit = remaining[0]
            trial = a.model_copy(update={"device": _moved(a.device, unit, d), "cpu_experts": a.cpu_experts - {unit}})
            if not fits(trial, d):
                break
            a = trial
            remaining.pop(0)
        if not remaining:
            break
        unit, overflow = remaining[0], d + 1 if d < len(devices) - 1 else CPU
        for kind in ("up", "gate"):
            split = PartialLayer(layer=unit, kind=kind, overflow=overflow)
            trial = a.model_copy(
                update={
                    "device": _moved(a.device, unit, d),
                    "cpu_experts": a.cpu_experts - {unit},
                    "partials": (*[p for p in a.partials if p.layer != unit], split),
                }
            )
            if not fits(trial, d, overflow):
                break
            a = trial
        if any(p.layer == unit for p in a.partials):
            remaining.pop(0)
    whole = sorted(a.cpu_experts)
    steps.append(
        f"dense-only layers turned into full layers front to back: the experts of {len(whole)} layers stay on the CPU"
        f"{f' ({whole[0]} to {whole[-1]})' if whole else ''} ({FIT_SOURCE} step 4)"
    )
    for p in a.partials:
        steps.append(
            f"one more partial layer: layer {p.layer} keeps attention and its {'up' if p.kind == 'up' else 'up and gate'}"
            f" experts on device {a.device[p.layer]}, the rest on {'the CPU' if p.overflow == CPU else f'device {p.overflow}'}"
            f" ({FIT_SOURCE} step 4, LAYER_FRACTION_{p.kind.upper()})"
        )
    return a


def _moved(device: list[int], unit: int, to: int) -> list[int]:
    moved = list(device)
    moved[unit] = to
    return moved


def _names(devices: list[PlacementDevice]) -> list[str]:
    """llama.cpp's names for the devices (CUDA0, ROCm1, MTL0)."""
    return [
        f"CUDA{i}" if d.backend == "cuda" else ("MTL0" if d.backend == "metal" else f"{d.backend.upper()}{i}")
        for i, d in enumerate(devices)
    ]


def _layer_alternation(layers: list[int]) -> str:
    return str(layers[0]) if len(layers) == 1 else "(" + "|".join(map(str, layers)) + ")"


def _placement(
    model: ModelSpec, workload: Workload, layout: _Layout, devices: list[PlacementDevice], request: PlacementRequest,
    a: _Assign, plans: list[DevicePlan], host: HostPlan, steps: list[str],
) -> Placement:  # fmt: skip
    n = layout.n_layers
    units = n + 1
    counts = [sum(1 for u in range(units) if a.device[u] == d) for d in range(len(devices))]
    ngl = sum(counts)
    names = _names(devices)
    on_gpu_experts = sorted(u for u in a.cpu_experts if a.device[u] != CPU)
    overrides = [rf"blk\.{_layer_alternation(on_gpu_experts)}\.{EXPERT_PATTERN}=CPU"] if on_gpu_experts else []
    overrides += [
        rf"blk\.{p.layer}\.{PARTIAL_OVERRIDE[p.kind]}={'CPU' if p.overflow == CPU else names[p.overflow]}" for p in a.partials
    ]
    args = ["-c", str(layout.ctx), "-ngl", str(ngl)]
    if len(devices) > 1:
        args += ["-ts", ",".join(map(str, counts))]
    first_n = sorted(a.cpu_experts) == list(range(len(a.cpu_experts)))
    if on_gpu_experts and first_n:
        args += ["--n-cpu-moe", str(len(a.cpu_experts))]
    pattern_args = overrides[1:] if on_gpu_experts and first_n else overrides
    if pattern_args:
        args += ["-ot", '"' + ",".join(pattern_args) + '"']
    if workload.batch > 1:
        args += ["-np", str(workload.batch)]
    if not request.mmap:
        args.append("--no-mmap")
    if model.mla is None and "sliding" in model.attention_kinds() and workload.engine.swa_full is not False:
        # the plan counts full-size SWA caches (the library's default, kvcalc's); llama-server's is window-sized
        # (common/common.h swa_full = false): the command asks for what the plan counts
        args.append("--swa-full")
    logs = [f"load_tensors: offloaded {ngl}/{units} layers to GPU"]
    logs += [
        f"load_tensors: {name + ('_Mapped' if request.mmap and d.unified else ''):>10} model buffer size = {p.weights_bytes / MiB:10.2f} MiB"
        for name, p, d in zip(names, plans, devices, strict=True)
        if p.layers
    ]  # Metal maps the file's pages (MTL0_Mapped)
    host_name = "CPU_Mapped" if request.mmap else ("CUDA_Host" if devices and devices[0].backend == "cuda" else "CPU")
    logs.append(f"load_tensors: {host_name:>10} model buffer size = {host.weights_bytes / MiB:10.2f} MiB")
    caches = [*zip(names, plans, strict=True), ("CPU", host)]
    logs += [
        f"llama_kv_cache: {name:>10} KV buffer size = {(p.kv_bytes - p.state_bytes) / MiB:10.2f} MiB"
        for name, p in caches
        if p.kv_bytes > p.state_bytes
    ]
    logs += [
        f"llama_memory_recurrent: {name:>10} RS buffer size = {p.state_bytes / MiB:10.2f} MiB"
        for name, p in caches
        if p.state_bytes
    ]
    logs += [
        f"sched_reserve: {name:>10} compute buffer size = {p.compute_bytes / MiB:10.2f} MiB"
        for name, p in zip(names, plans, strict=True)
        if p.layers
    ]
    logs.append(
        f"sched_reserve: {'CUDA_Host' if devices and devices[0].backend == 'cuda' else 'CPU':>10} compute buffer size = {host.compute_bytes / MiB:10.2f} MiB"
    )
    w = layout.weights
    rows = f"{layout.output_rows} row(s)" + (
        " (the whole ubatch: builds before PR #23861)" if request.all_logits_reserved else ""
    )
    masks = (
        ", ".join(
            f"{kind} n_kv {cells:,} ({_mask_bytes(layout, {kind}, False):,} B on the host, {_mask_bytes(layout, {kind}, True):,} B on a device)"
            for kind, cells in sorted(layout.mask_cells.items())
        )
        or "none"
    )
    if not layout.flash_attn:
        mask_type = "f32 on the host and on each device that attends with it"
    elif layout.f32_mask:
        mask_type = (
            "f32 on the host; each device that attends with it holds an f32 copy and its f16 cast (builds before PR #23764)"
        )
    else:
        mask_type = "f16 on the host and on each device that attends with it"
    explain = [
        f"placement: llama.cpp's fit ({FIT_SOURCE}); units 0..{n - 1} are the layers"
        f"{f' ({layout.mtp} MTP layer(s) last)' if layout.mtp else ''}, unit {n} the output layer",
        f"-ngl order: {'the output layer first, then the layers back to front' if request.output_first else 'the layers back to front, the output layer last (builds before PR #18148)'} ({OUTPUT_FIRST_SOURCE})",
        f"weights per layer {w.explain}; token_embd {w.embeddings:,} B stays in host memory; output layer {w.output:,} B",
        f"cache per layer at n_ctx {layout.ctx:,}: {layout.kv[0]:,} B (layer 0), {sum(layout.kv):,} B in all; it sits with its layer"
        + (f" (K and V per head: {MLA_PER_HEAD_SOURCE})" if request.mla_per_head else ""),
        f"attention masks: n_kv x n_ubatch {layout.ubatch} each, {masks}: {mask_type} ({MASK_SOURCE})",
        f"compute buffer per device = max(4 B * n_ubatch {layout.ubatch} * (2 * n_ff + 2 * n_embd) + its masks,"
        f" 4 B * (logits {rows} * n_vocab + n_ubatch * n_embd) on the output's device"
        f"{'' if layout.flash_attn else ', 4 B * n_ubatch * (n_ctx * n_head + 2 * n_embd) + its masks without flash attention'}) ({LOGITS_SOURCE})",
        f"host compute buffer: as a device's when layers or experts run on the CPU, else 4 B * n_ubatch * n_embd (the input rows);"
        f" it holds every mask's input; output buffer 4 B * n_vocab * {workload.batch} sequences",
        *_split_lines(devices, counts, request),
        *request.resident_explain,
        *steps,
    ]
    for name, p in zip(names, plans, strict=True):
        explain.append(
            f"{p.name} ({name}): {p.layers} layers from {p.first_layer}: weights {p.weights_bytes:,} + KV {p.kv_bytes:,} + compute"
            f" {p.compute_bytes:,}{f' + residents {p.resident_bytes:,}' if p.resident_bytes else ''} = {p.total_bytes:,} B ({format_bytes(p.total_bytes)}) vs free {p.free_bytes:,} - margin"
            f" {p.free_bytes - p.target_bytes:,} = {p.target_bytes:,} B: {'fits' if p.fits else 'does NOT fit'}"
        )
    ram = (
        f" vs --ram {host.ram_bytes:,} B: {'fits' if host.fits else 'does NOT fit'}"
        if host.ram_bytes is not None
        else " (no --ram: not checked)"
    )
    explain.append(
        f"host: weights {host.weights_bytes:,} ({'mmap' if host.mapped else 'loaded, --no-mmap'}) + KV {host.kv_bytes:,} + compute"
        f" {host.compute_bytes:,} + output {host.output_bytes:,} = {host.total_bytes:,} B ({format_bytes(host.total_bytes)}){ram}"
    )
    return Placement(
        n_gpu_layers=ngl, n_cpu_moe=len(a.cpu_experts), cpu_expert_layers=sorted(a.cpu_experts), partial_layers=list(a.partials),
        tensor_split=counts, mtp_layers=layout.mtp, output_first=request.output_first, ctx_size=layout.ctx, devices=plans, host=host,
        overrides=overrides, command="llama-server " + " ".join(args), fits=all(p.fits for p in plans) and host.fits,
        steps=steps, log_lines=logs, explain=explain,
    )  # fmt: skip


def _split_lines(devices: list[PlacementDevice], counts: list[int], request: PlacementRequest) -> list[str]:
    """The --explain lines of a split over several GPUs: llama.cpp's -sm layer, each device's share."""
    if len(devices) < 2:
        return []
    shares = request.tensor_split or [d.free_bytes for d in devices]
    basis = "-ts " + ",".join(f"{s:g}" for s in shares) if request.tensor_split else "free memory (no -ts)"
    return [
        f"-sm layer (llama.cpp's default split mode): whole layers per device in proportion to {basis}, here"
        f" {', '.join(f'{n} {c}' for n, c in zip(_names(devices), counts, strict=True))} units ({LAYER_SPLIT_SOURCE})",
        f"each device holds its own layers' cache: no head is split, so the devices' KV sums to the one-GPU cache ({KV_DEVICE_SOURCE});"
        f" -sm row and -sm tensor are not modelled ({SPLIT_MODES_SOURCE})",
    ]


def placement_device(
    gpu: GpuSpec, margin_bytes: int, wired_limit_bytes: int | None = None, in_use_bytes: int = 0
) -> PlacementDevice:
    """A GPU preset as the plan sees it: a Mac offers its working set, not its whole RAM; `in_use_bytes`
    (--memory-in-use), held by other processes, is not free (llama.cpp's fit reads the device's free memory,
    llama_get_device_memory)."""
    unified = gpu.backend == "metal"
    total = working_set_bytes(gpu.memory_bytes, wired_limit_bytes) if unified else gpu.memory_bytes
    if not 0 <= in_use_bytes < total:
        raise InvalidInput(f"--memory-in-use {in_use_bytes:,} B must be at least 0 and below {gpu.name}'s {total:,} B")
    free = total - in_use_bytes
    return PlacementDevice(
        name=gpu.name, free_bytes=free, margin_bytes=margin_bytes, bandwidth_bytes_per_s=gpu.bandwidth_bytes_per_s,
        backend=gpu.backend, unified=unified,
    )  # fmt: skip


# The host's speed at decode: RAM bandwidth * HOST_EFFICIENCY, and HOP_SECONDS for each hop between the host and a
# device (the copies, synchronisation and launches a graph split adds: two per layer whose experts stay on the CPU
# under --n-cpu-moe). Both fitted by scripts/placement_cases.py on published partial-offload speeds
# (tests/fixtures/placement/speeds.yaml), each the median of what its cases imply given the other: HOST_EFFICIENCY
# every case, HOP_SECONDS those with more than two hops. docs/placement.md scores them, each source left out in
# turn, against the one constant of before (no hop cost) and against a cap of cores * a fitted rate per core,
# which was tested and not adopted: one rate per core does not hold from a Comet Lake or Zen 2 core (~5 GB/s)
# to a Zen 5 one (over 11 GB/s, the Ryzen 5 9600X rows).
HOST_EFFICIENCY = 0.59
HOP_SECONDS = 230e-6
PCIE_BYTES_PER_S = 32 * 10**9  # PCIe 4.0 x16, one direction (PCI-SIG: 16 GT/s * 16 lanes, 128b/130b)


class HostSpeed(Frozen):
    """What sets the speed of the layers and experts left in host RAM: the RAM's bandwidth and the fitted
    share of it, and the fixed cost of each hop between the host and a device. `cpu_cores` with
    `core_bytes_per_s` caps the rate at cores * bytes per core: the variant docs/placement.md scores, not
    kvcalc's default (no rate per core is shipped)."""

    ram_bandwidth_bytes_per_s: int
    efficiency: float = HOST_EFFICIENCY
    hop_seconds: float = HOP_SECONDS
    cpu_cores: int | None = None
    core_bytes_per_s: int | None = None


def host_bytes_per_s(host: HostSpeed) -> tuple[float, Literal["RAM", "cores"]]:
    """Bytes per second the host streams at decode, and what binds: RAM bandwidth * efficiency, or the
    cores' cap when one is given, whichever is lower.

    >>> host_bytes_per_s(HostSpeed(ram_bandwidth_bytes_per_s=51_200_000_000, efficiency=0.5))
    (25600000000.0, 'RAM')
    >>> host_bytes_per_s(HostSpeed(ram_bandwidth_bytes_per_s=96 * 10**9, cpu_cores=8, core_bytes_per_s=5 * 10**9))
    (40000000000, 'cores')
    """
    ram = host.ram_bandwidth_bytes_per_s * host.efficiency
    if host.cpu_cores is not None and host.core_bytes_per_s is not None and host.cpu_cores * host.core_bytes_per_s < ram:
        return host.cpu_cores * host.core_bytes_per_s, "cores"
    return ram, "RAM"


class SplitDecode(Frozen):
    """The decode speed of a placement: each device's bytes per token over its bandwidth, the host's
    over the rate its RAM and cores allow (MoE: only the experts a step touches), plus the hops between them."""

    device_seconds: list[float]
    host_bytes: int  # weights and cache the host reads per step
    host_bytes_per_s: float
    host_bound: Literal["RAM", "cores"]
    host_seconds: float
    hops: int  # places a step's activations change device: between layers, and there and back for experts elsewhere
    hop_seconds: float
    overhead_seconds: float  # the fixed costs per step, per layer and per recurrent-state layer together
    recurrent_seconds: float  # their share from recurrent-state layers (llama.cpp's small ops)
    roofline_seconds: float
    expected_seconds: float
    tokens_per_s: float  # expected, all sequences
    roofline_tokens_per_s: float
    explain: list[str]


def _replayed(layout: _Layout, placement: Placement) -> _Assign:
    """The assignment a placement describes, for its speed."""
    a = _assign(layout, placement.tensor_split, placement.output_first, frozenset(placement.cpu_expert_layers))
    return a.model_copy(update={"partials": tuple(placement.partial_layers)})


def split_decode(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, placement: Placement, devices: list[PlacementDevice],
    host: HostSpeed, profile: DecodeProfile,
) -> SplitDecode:  # fmt: skip
    """t = sum over devices of bytes_d / (bandwidth_d * efficiency) + host bytes / host_bytes_per_s(host) + hops *
    (activation bytes / PCIe + HOP_SECONDS) + fixed cost per layer (the engine's decode profile). A step reads each
    layer's weights once where they sit: routed experts only in the share the batch touches,
    E * (1 - (1 - k/E)^B) / E (kvcalc.latency), and the cache at --seq."""
    layout = _layout(model, workload, fmt, workload.seq, PlacementRequest(mtp=placement.mtp_layers > 0))
    a = _replayed(layout, placement)
    w = layout.weights
    n = layout.n_layers
    touched = 1.0
    if model.moe is not None:
        touched = expected_experts_touched(model.moe.experts, model.moe.experts_per_token, workload.batch) / model.moe.experts
    stored = fmt.stored
    fclass = stored_format_class(stored.bytes * 8 / stored.params) if stored else format_class(fmt.dtype)
    # each device streams at its fitted share of peak (kvcalc.decode_profiles), the fixed costs are the step's and the layers'
    fitted = [terms(profile, fclass, model.moe is not None, d.name, None) for d in devices]
    efficiencies = [t.weights_efficiency for t in fitted]
    fixed = fitted[0] if fitted else terms(profile, fclass, model.moe is not None, "", None)
    device_bytes, host_bytes = [0] * len(devices), 0
    hops, previous = 0, a.device[0]
    for unit in range(n + 1):
        place = a.device[unit]
        own = w.output if unit == n else w.layers[unit] + layout.kv[unit]
        if place == CPU:
            host_bytes += own
        else:
            device_bytes[place] += own
        shares = _expert_shares(model, layout, a, unit)
        for where, size in shares:
            if where == CPU:
                host_bytes += round(size * touched)
            else:
                device_bytes[where] += round(size * touched)
        # a hop where the token's activations change place: between consecutive layers, and there and
        # back for a layer whose experts run elsewhere
        hops += (place != previous) + 2 * sum(1 for where, _ in shares if where != place)
        previous = place
    device_s = [b / (d.bandwidth_bytes_per_s * e) for b, d, e in zip(device_bytes, devices, efficiencies, strict=True)]
    roof_device = [b / d.bandwidth_bytes_per_s for b, d in zip(device_bytes, devices, strict=True)]
    host_roof = host_bytes / host.ram_bandwidth_bytes_per_s
    host_rate, host_bound = host_bytes_per_s(host)
    host_s = host_bytes / host_rate
    hop_bytes_s = hops * F32 * (model.hidden or 0) * workload.batch / PCIE_BYTES_PER_S
    hop_s = hop_bytes_s + hops * host.hop_seconds
    stateful = recurrent_layers(model)
    recurrent = fixed.recurrent_layer_seconds * stateful
    overhead = fixed.step_seconds + fixed.layer_seconds * model.layers + recurrent
    roofline_s = sum(roof_device) + host_roof + hop_bytes_s
    expected = max(roofline_s, sum(device_s) + host_s + hop_s + overhead)
    explain = [
        f"split decode: each device reads its layers' weights and cache once per token (routed experts at the {touched:.3f}"
        f" share {workload.batch} token(s) touch); format class {fclass} ({profile.name}: {profile.label})",
        *(
            f"{d.name}: {b:,} B / ({d.bandwidth_bytes_per_s:,} B/s * {e:.3g}) = {s * 1e3:.3f} ms"
            for d, b, s, e in zip(devices, device_bytes, device_s, efficiencies, strict=True)
        ),  # fmt: skip
        _host_line(host, host_bytes, host_rate, host_bound, host_s),
        f"hops: {hops} * ({F32 * (model.hidden or 0) * workload.batch:,} B / PCIe {PCIE_BYTES_PER_S:,} B/s"
        f" + {host.hop_seconds * 1e6:.0f} µs fixed) = {hop_s * 1e3:.4f} ms;"
        f" fixed cost {fixed.step_seconds * 1e3:.3f} ms per step + {fixed.layer_seconds * 1e3:.3f} ms * {model.layers} layers"
        + (f" + {fixed.recurrent_layer_seconds * 1e3:.3f} ms * {stateful} recurrent layers" if recurrent else ""),
        f"expected {expected * 1e3:.3f} ms per token = {workload.batch / expected:.2f} tok/s (roofline {roofline_s * 1e3:.3f} ms)",
    ]
    return SplitDecode(
        device_seconds=device_s, host_bytes=host_bytes, host_bytes_per_s=host_rate, host_bound=host_bound, host_seconds=host_s, hops=hops, hop_seconds=hop_s, overhead_seconds=overhead, recurrent_seconds=recurrent, roofline_seconds=roofline_s,
        expected_seconds=expected, tokens_per_s=workload.batch / expected, roofline_tokens_per_s=workload.batch / roofline_s,
        explain=explain,
    )  # fmt: skip


def _host_line(host: HostSpeed, host_bytes: int, rate: float, bound: str, seconds: float) -> str:
    """The --explain line of the host's time and where its share comes from."""
    share = f"RAM {host.ram_bandwidth_bytes_per_s:,} B/s * {host.efficiency}"
    if host.cpu_cores and host.core_bytes_per_s:
        share = f"min({share}, {host.cpu_cores} cores * {host.core_bytes_per_s:,} B/s)"
    return (
        f"host: {host_bytes:,} B / {share} ="
        f" {host_bytes:,} B / {rate:,.0f} B/s ({bound} bound) = {seconds * 1e3:.3f} ms (the share CPU matmuls reach,"
        " fitted on published partial-offload speeds: docs/placement.md)"
    )


class SpeedStep(Frozen):
    """One step of the trade between what sits on the GPUs and speed: the flags, whether every device and
    the host fit, and the expected decode speed."""

    n_gpu_layers: int
    n_cpu_moe: int
    fits: bool
    tokens_per_s: float


def speed_steps(
    model: ModelSpec, workload: Workload, fmt: WeightFormat, devices: list[PlacementDevice], request: PlacementRequest,
    host: HostSpeed, profile: DecodeProfile, step: int = 4,
) -> list[SpeedStep]:  # fmt: skip
    """Tokens/s at each `step` of --n-cpu-moe (a MoE: all layers on the GPUs, the first N layers' experts
    on the CPU) or of -ngl (dense), at the request's context, so the cost of each layer left on the CPU shows."""
    layers = model.layers + (model.mtp_layers if request.mtp else 0)
    units = layers + 1
    moe = model.moe is not None
    counts = sorted({*range(0, layers + 1, step), layers} if moe else {*range(units, -1, -step), 0})
    steps = []
    for n in counts:
        fixed = request.model_copy(
            update={
                "n_gpu_layers": units if moe else n,
                "n_cpu_moe": n if moe else None,
                "expert_layers_on_cpu": None,
                "partial_layer": None,
            }
        )
        laid_out = plan(model, workload, fmt, devices, fixed)
        speed = split_decode(model, workload, fmt, laid_out, devices, host, profile)
        steps.append(
            SpeedStep(
                n_gpu_layers=laid_out.n_gpu_layers,
                n_cpu_moe=laid_out.n_cpu_moe,
                fits=laid_out.fits,
                tokens_per_s=speed.tokens_per_s,
            )
        )
    return steps
