"""A multimodal model's vision tower from its config.json: the parameters of the tower and its
projector (weights every engine loads beside the language model's), and the largest image its
processor accepts, in patches the tower runs on and in tokens the language model receives. Pure: a
config mapping in, VisionSpec fields out.

Each architecture's count follows the modules its transformers modeling file builds (named per
function); biases, norms, position tables and the projector are counted, rotary tables and other
buffers are not (they are not weights in the checkpoint)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kvcalc.errors import InvalidPreset

# The largest image each processor accepts, as its published preprocessor_config.json or processor gives it.
QWEN2_VL_MAX_PIXELS = 12_845_056  # Qwen2-VL / Qwen2.5-VL preprocessor_config.json max_pixels (3584 x 3584)
QWEN3_VL_MAX_PIXELS = 16_777_216  # Qwen3-VL preprocessor_config.json size.longest_edge (4096 x 4096), Qwen3.5 likewise
LLAMA4_MAX_TILES = 16  # Llama4ImageProcessor max_patches: 16 tiles of 336 px, and a global tile beside them
INTERNVL_MAX_TILES = 12  # InternVL's max_dynamic_patch default, and a thumbnail tile beside them


# vLLM's V0 engine profiles one item per modality per prompt unless --limit-mm-per-prompt says otherwise
# (vllm/multimodal/registry.py MultiModalRegistry.init_mm_limits_per_prompt, v0.7.0; vllm/config.py
# MultiModalConfig.get_default_limit_per_prompt "999 if envs.VLLM_USE_V1 else 1", 0.8.4 to 0.10.2).
V0_MM_LIMIT = 1


def v0_profile_items(
    batched_tokens: int, max_num_seqs: int, tokens_per_item: int, limit: int, encoder_decoder: bool = False
) -> tuple[int, str]:
    """The items vLLM's V0 engine (kvcalc.engines.vllm.runs_v0) feeds its encoder in the profiling run, and the formula.
    Its decoder-only runner (vllm/worker/model_runner.py GPUModelRunnerBase.profile_run, v0.7.0) caps the
    dummy prompts at max_num_batched_tokens // (limit * tokens per item) (the registry's
    get_max_multimodal_tokens), at least one, at most max_num_seqs; its encoder-decoder runner
    (vllm/worker/enc_dec_model_runner.py EncoderDecoderModelRunner.profile_run) does not cap them:
    max_num_seqs prompts. Each prompt carries `limit` items, and all of them run through the encoder in
    one batch.

    >>> v0_profile_items(8192, 256, 1280, 1)[0], v0_profile_items(2048, 256, 16384, 1)[0], v0_profile_items(65536, 8, 1024, 2)[0]
    (6, 1, 16)
    >>> v0_profile_items(65536, 128, 6404, 1, encoder_decoder=True)[0]
    128
    """
    per = f"{limit} item{'s' if limit > 1 else ''}"
    if encoder_decoder:
        return max_num_seqs * limit, (
            f"V0 encoder-decoder: max_num_seqs {max_num_seqs:,} prompts of {per}, not capped by tokens"
            " (vllm/worker/enc_dec_model_runner.py profile_run, v0.7.0)"
        )
    prompts = max(1, min(max_num_seqs, batched_tokens // (limit * tokens_per_item)))
    return prompts * limit, (
        f"V0: max(1, min(max_num_seqs {max_num_seqs:,}, max_num_batched_tokens {batched_tokens:,} // (limit {limit} *"
        f" {tokens_per_item:,} tokens per item))) = {prompts:,} prompt{'s' if prompts > 1 else ''} of {per}"
        " (vllm/worker/model_runner.py profile_run, v0.7.0)"
    )


def _int(vision: dict[str, Any], key: str, default: int | None = None) -> int:
    value = vision.get(key, default)
    if value is None:
        raise InvalidPreset(f"vision_config.{key}: missing, and the vision tower needs it")
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:  # InternVL writes [448, 448]
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPreset(f"vision_config.{key}: expected a positive integer, got {value!r}")
    return value


def _bool(mapping: dict[str, Any], key: str, default: bool, where: str = "") -> bool:
    """A config flag: a real boolean when present (a string such as "no" is refused, not read as
    true), `default` when absent."""
    value = mapping.get(key, default)
    if not isinstance(value, bool):
        raise InvalidPreset(f"{where}{key}: expected true or false, got {value!r}")
    return value


def _layer_norm(width: int) -> int:
    return 2 * width  # weight and bias


def _linear(inputs: int, outputs: int, bias: bool = True) -> int:
    return inputs * outputs + (outputs if bias else 0)


def _vit_layer(hidden: int, intermediate: int) -> int:
    """A ViT encoder layer: two LayerNorms, q, k, v and the output projection with biases, fc1 and
    fc2 with biases (SigLIP, CLIP, Qwen2-VL / Qwen3-VL blocks, Llama 4's, MoonViT's)."""
    return (
        2 * _layer_norm(hidden)
        + _linear(hidden, 3 * hidden)
        + _linear(hidden, hidden)
        + _linear(hidden, intermediate)
        + _linear(intermediate, hidden)
    )


def _siglip_tower(hidden: int, intermediate: int, layers: int, patch: int, patches: int) -> int:
    """SigLIP's tower body (modeling_siglip.py SiglipVisionEmbeddings, SiglipEncoder): the Conv2d patch
    embedding with bias, a position table of one row per patch, and `layers` ViT layers."""
    return _linear(3 * patch * patch, hidden) + patches * hidden + layers * _vit_layer(hidden, intermediate)


def qwen2_5_vl(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Qwen2.5-VL (modeling_qwen2_5_vl.py): Conv3d patch embedding without bias (3 * t * p * p * h);
    per block two RMSNorms, qkv and proj with biases, a gated MLP with biases; the PatchMerger's
    RMSNorm and its two linears (4h -> 4h -> out_hidden_size).

    >>> qwen2_5_vl({"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "out_hidden_size": 3584}, {})["params"]
    676550144
    """
    h, inter, depth = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "depth")
    p, t, merge = _int(vision, "patch_size", 14), _int(vision, "temporal_patch_size", 2), _int(vision, "spatial_merge_size", 2)
    out = _int(vision, "out_hidden_size")
    block = 2 * h + _linear(h, 3 * h) + _linear(h, h) + 2 * _linear(h, inter) + _linear(inter, h)
    merger = h + _linear(h * merge**2, h * merge**2) + _linear(h * merge**2, out)
    params = 3 * t * p * p * h + depth * block + merger
    patches = QWEN2_VL_MAX_PIXELS // (p * p)
    found = _fields(params, h, inter, True, patches, patches // merge**2, "modeling_qwen2_5_vl.py Qwen2_5_VisionTransformer",
                    f"max_pixels {QWEN2_VL_MAX_PIXELS:,} (preprocessor_config.json)")  # fmt: skip
    return _resizable(found, p, merge)


def qwen2_vl(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Qwen2-VL (modeling_qwen2_vl.py): the same patch embedding; per block two LayerNorms, qkv and
    proj with biases, fc1 (h -> mlp_ratio * h) and fc2 with biases; the PatchMerger with a LayerNorm."""
    h, depth = _int(vision, "embed_dim"), _int(vision, "depth")
    inter = int(h * vision.get("mlp_ratio", 4))
    p, t, merge = _int(vision, "patch_size", 14), _int(vision, "temporal_patch_size", 2), _int(vision, "spatial_merge_size", 2)
    out = _int(vision, "hidden_size")
    block = _vit_layer(h, inter)
    merger = _layer_norm(h) + _linear(h * merge**2, h * merge**2) + _linear(h * merge**2, out)
    params = 3 * t * p * p * h + depth * block + merger
    patches = QWEN2_VL_MAX_PIXELS // (p * p)
    found = _fields(params, h, inter, False, patches, patches // merge**2, "modeling_qwen2_vl.py Qwen2VisionTransformerPretrainedModel",
                    f"max_pixels {QWEN2_VL_MAX_PIXELS:,} (preprocessor_config.json)")  # fmt: skip
    return _resizable(found, p, merge)


def qwen3_vl(vision: dict[str, Any], config: dict[str, Any], deepstack: bool = True) -> dict[str, Any]:
    """Qwen3-VL (modeling_qwen3_vl.py): Conv3d patch embedding with bias, a learned position table
    (num_position_embeddings, h); per block two LayerNorms, qkv and proj, linear_fc1 and linear_fc2,
    all with biases; the PatchMerger (LayerNorm(h), 4h -> 4h -> out_hidden_size) and one DeepStack
    merger per deepstack_visual_indexes entry (LayerNorm(4h) after the shuffle). Qwen3.5
    (modeling_qwen3_5.py Qwen3_5VisionModel) deletes the DeepStack mergers.

    >>> qwen3_vl({"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "out_hidden_size": 4096}, {})["params"]
    576388336
    """
    h, inter, depth = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "depth")
    p, t, merge = _int(vision, "patch_size", 16), _int(vision, "temporal_patch_size", 2), _int(vision, "spatial_merge_size", 2)
    out, positions = _int(vision, "out_hidden_size"), _int(vision, "num_position_embeddings", 2304)
    wide = h * merge**2
    block = _vit_layer(h, inter)
    merger = _linear(wide, wide) + _linear(wide, out)
    stacks = len(vision.get("deepstack_visual_indexes", [8, 16, 24])) if deepstack else 0
    params = (
        3 * t * p * p * h + h + positions * h + depth * block + _layer_norm(h) + merger + stacks * (_layer_norm(wide) + merger)
    )
    patches = QWEN3_VL_MAX_PIXELS // (p * p)
    where = "modeling_qwen3_vl.py Qwen3VLVisionModel" if deepstack else "modeling_qwen3_5.py Qwen3_5VisionModel (no DeepStack)"
    found = _fields(params, h, inter, False, patches, patches // merge**2, where,
                    f"longest_edge {QWEN3_VL_MAX_PIXELS:,} pixels (preprocessor_config.json)")  # fmt: skip
    if stacks:  # vLLM's Qwen3_VisionTransformer returns the merger's output beside each DeepStack merger's (qwen3_vl.py)
        found["output_width"] = out * (1 + stacks)
    return _resizable(found, p, merge)


def siglip_gemma3(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Gemma 3 (modeling_gemma3.py, modeling_siglip.py SiglipVisionTransformer without its pooling
    head, vision_use_head false): Conv2d patch embedding with bias, a position table of one row per
    patch; per layer two LayerNorms, q, k, v and out with biases, fc1 and fc2 with biases; the
    post-LayerNorm; the projector's RMSNorm and its (vision h, text h) matrix. One 896-px image:
    (896 / 14)^2 patches, mm_tokens_per_image tokens.

    >>> siglip_gemma3({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27}, {"text_config": {"hidden_size": 2560}})["params"]
    419816304
    """
    h, inter, layers = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    size, p = _int(vision, "image_size", 896), _int(vision, "patch_size", 14)
    text = _int(config.get("text_config") or {}, "hidden_size")
    patches = (size // p) ** 2
    params = _siglip_tower(h, inter, layers, p, patches) + _layer_norm(h) + h + h * text
    return _fields(params, h, inter, False, patches, _int(config, "mm_tokens_per_image", 256),
                   "modeling_siglip.py SiglipVisionTransformer, modeling_gemma3.py Gemma3MultiModalProjector", f"one {size}-px image")  # fmt: skip


def gemma4(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Gemma 4 (modeling_gemma4.py Gemma4VisionModel, Gemma4MultimodalEmbedder): the patch linear
    (3 * p^2 -> h, no bias) and a (2, position_embedding_size, h) position table; per layer q, k, v
    and o without biases, q and k RMSNorms of head_dim (v's has no scale), four RMSNorms of h and a
    gated MLP without biases; the stored std_bias and std_scale (h each) when standardize, and each
    clipped linear's four stored bounds when use_clipped_linears; the embedder's projection (h ->
    text hidden, no bias; its norm has no scale). The pooler has no weights. One image at the
    processor's default vision_soft_tokens_per_image, each token pooling pooling_kernel_size^2 patches.

    >>> gemma4({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    ...         "head_dim": 72}, {"text_config": {"hidden_size": 5376}})["params"]
    575743536
    """
    h, inter, layers = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    heads = _int(vision, "num_attention_heads")
    kv_heads, head = _int(vision, "num_key_value_heads", heads), _int(vision, "head_dim", h // heads)
    p, positions = _int(vision, "patch_size", 16), _int(vision, "position_embedding_size", 10240)
    text = _int(config.get("text_config") or {}, "hidden_size")
    bounds = 4 * 7 if _bool(vision, "use_clipped_linears", False, "vision_config.") else 0  # q, k, v, o, gate, up, down
    layer = 2 * h * heads * head + 2 * h * kv_heads * head + 2 * head + 4 * h + 3 * h * inter + bounds
    stored = 2 * h if _bool(vision, "standardize", True, "vision_config.") else 0
    params = 3 * p * p * h + 2 * positions * h + layers * layer + stored + h * text
    tokens = _int(config, "vision_soft_tokens_per_image", _int(vision, "default_output_length", 280))
    pool = _int(vision, "pooling_kernel_size", 3)
    return _fields(params, h, inter, True, tokens * pool * pool, tokens,
                   "modeling_gemma4.py Gemma4VisionModel, Gemma4MultimodalEmbedder",
                   f"one image of {tokens} soft tokens (vision_soft_tokens_per_image)")  # fmt: skip


def llama4(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Llama 4 (modeling_llama4.py Llama4VisionModel): the unfold patch linear without bias, a class
    embedding and a position table of patches + 1 rows, pre and post LayerNorms; per layer two
    LayerNorms, q, k, v and o with biases, fc1 and fc2 with biases; the pixel-shuffle MLP (fc1
    intermediate -> projector_input_dim, fc2 -> projector_output_dim, no biases) and the projector
    (vision_output_dim -> text hidden, no bias). Up to 16 tiles of 336 px and a global one."""
    h, inter, layers = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    size, p = _int(vision, "image_size", 336), _int(vision, "patch_size", 14)
    project_in, project_out = _int(vision, "projector_input_dim"), _int(vision, "projector_output_dim")
    text = _int(config.get("text_config") or {}, "hidden_size")
    patches = (size // p) ** 2
    params = (
        3 * p * p * h + h + (patches + 1) * h + 2 * _layer_norm(h) + layers * _vit_layer(h, inter)
        + inter * project_in + project_in * project_out + _int(vision, "vision_output_dim") * text
    )  # fmt: skip
    ratio = vision.get("pixel_shuffle_ratio", 0.5)
    tiles = LLAMA4_MAX_TILES + 1
    return _fields(params, h, inter, False, tiles * (patches + 1), tiles * int(patches * ratio * ratio),
                   "modeling_llama4.py Llama4VisionModel, Llama4MultiModalProjector", f"{LLAMA4_MAX_TILES} tiles of {size} px and a global tile")  # fmt: skip


def _moonvit_params(vision: dict[str, Any], h: int, inter: int, layers: int, text: int) -> int:
    """MoonViT and its projector, as vLLM builds them (moonvit.py / kimi_k25_vit.py, kimi_vl.py /
    kimi_k25.py): Conv2d patch embedding with bias and a learned (init_pos_emb_height,
    init_pos_emb_width, h) position table; per layer two LayerNorms, wqkv and wo with biases, fc0 and
    fc1 with biases; the final LayerNorm; the projector's LayerNorm(h) and its two linears with biases
    (4h -> 4h -> the text model's hidden, after the 2 x 2 merge)."""
    p = _int(vision, "patch_size", 14)
    height, width = _int(vision, "init_pos_emb_height", 64), _int(vision, "init_pos_emb_width", 64)
    merge = _merge_kernel(vision)
    wide = h * merge[0] * merge[1]
    params = _linear(3 * p * p, h) + height * width * h + layers * _vit_layer(h, inter) + _layer_norm(h)
    return params + _layer_norm(h) + _linear(wide, wide) + _linear(wide, text)


def _merge_kernel(vision: dict[str, Any]) -> list[int]:
    merge = vision.get("merge_kernel_size", [2, 2])
    if not (isinstance(merge, list) and len(merge) == 2 and all(isinstance(k, int) and k > 0 for k in merge)):
        raise InvalidPreset(f"vision_config.merge_kernel_size: expected two positive integers, got {merge!r}")
    return merge


def kimi_k25(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Kimi K2.5's MoonViT (no transformers modeling file: vLLM's model_executor/models/kimi_k25_vit.py
    MoonViT3dPretrainedModel, KimiK25MultiModalProjector, vllm-project/vllm fd849acb; its temporal
    table is a buffer), counted as _moonvit_params. The largest image its processor accepts is not
    read, so vLLM's profiling of it is not modelled.

    >>> kimi_k25({"vt_hidden_size": 1152, "vt_intermediate_size": 4304, "vt_num_hidden_layers": 27,
    ...           "text_hidden_size": 7168}, {})["params"]
    471143920
    """
    h, inter = _int(vision, "vt_hidden_size"), _int(vision, "vt_intermediate_size")
    text = (
        _int(vision, "text_hidden_size") if "text_hidden_size" in vision else _int(config.get("text_config") or {}, "hidden_size")
    )
    return {
        "params": _moonvit_params(vision, h, inter, _int(vision, "vt_num_hidden_layers"), text),
        "hidden": h, "intermediate": inter, "gated": False,
        "source": "vision_config, counted as vLLM's kimi_k25_vit.py MoonViT3dPretrainedModel, KimiK25MultiModalProjector"
        " builds it (vllm-project/vllm fd849acb); the largest image: not read, so its profiling is not modelled",
    }  # fmt: skip


# vLLM profiles Kimi-VL with a 1024 x 1024 dummy image (model_executor/models/kimi_vl.py MaxImageTokenMeta,
# v0.19.0). Its image processor shrinks an image of more than in_token_limit patches to about that many: 4096
# unless vision_config gives in_token_limit (KimiVLImageProcessor.__init__ and rescale, as Blaizzy/mlx-vlm
# mlx_vlm/models/kimi_vl/processing_kimi_vl.py ports it, 9e4016d0, reading vision_config.in_token_limit).
KIMI_VL_DUMMY_PIXELS = 1024
KIMI_VL_IN_TOKEN_LIMIT = 4096


def kimi_vl(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Kimi-VL's MoonViT (vLLM's model_executor/models/moonvit.py MoonVitPretrainedModel, kimi_vl.py
    KimiVLMultiModalProjector, v0.19.0; config keys of its MoonViTConfig), counted as _moonvit_params.
    Its largest image: the 1024-px dummy, shrunk to in_token_limit patches when it has more (side *
    sqrt(limit / patches)) and padded to whole merge kernels (kimi_vl.py
    KimiVLProcessingInfo.get_num_image_tokens). A patch times merge kernel wider than the dummy image
    is refused: it would hold no token.

    >>> found = kimi_vl({"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27},
    ...                 {"text_config": {"hidden_size": 2048}})
    >>> found["params"], found["patches_per_item"], found["tokens_per_item"]
    (447545840, 4356, 1089)
    """
    h, inter = _int(vision, "hidden_size"), _int(vision, "intermediate_size")
    text = _int(config.get("text_config") or {}, "hidden_size")
    p, merge = _int(vision, "patch_size", 14), _merge_kernel(vision)
    limit = _int(vision, "in_token_limit", KIMI_VL_IN_TOKEN_LIMIT)
    side = KIMI_VL_DUMMY_PIXELS
    if p * max(merge) > side:
        raise InvalidPreset(
            f"vision_config.patch_size {p} x merge_kernel_size {merge}: wider than the {side}-px image vLLM profiles Kimi-VL with"
        )
    if (side // p) ** 2 > limit:  # scaled so that its patches fit in_token_limit
        side = int(side * math.sqrt(limit / (side // p) ** 2))
    rows, columns = -(-side // (merge[0] * p)), -(-side // (merge[1] * p))  # padded to whole kernels
    tokens = rows * columns
    return _fields(_moonvit_params(vision, h, inter, _int(vision, "num_hidden_layers"), text), h, inter, False,
                   tokens * merge[0] * merge[1], tokens, "vLLM's moonvit.py MoonVitPretrainedModel, kimi_vl.py KimiVLMultiModalProjector (v0.19.0)",
                   f"the {KIMI_VL_DUMMY_PIXELS}-px dummy image within in_token_limit {limit:,} patches", by="")  # fmt: skip


def pixtral(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Mistral 3 / Pixtral (modeling_pixtral.py PixtralVisionModel, modeling_mistral3.py
    Mistral3MultiModalProjector): Conv2d patch embedding without bias, ln_pre RMSNorm; per layer two
    RMSNorms, q, k, v, o and a gated MLP, no biases; the projector's RMSNorm, patch merger (4h -> h)
    and two linears (biases when multimodal_projector_bias). One image of image_size px: its patches,
    and a token per merged 2x2 patch plus one [IMG_BREAK] per row."""
    h, inter, layers = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    size, p = _int(vision, "image_size", 1540), _int(vision, "patch_size", 14)
    merge = _int(config, "spatial_merge_size", 2)
    text = _int(config.get("text_config") or {}, "hidden_size")
    bias = _bool(config, "multimodal_projector_bias", False)
    layer = 2 * h + 4 * h * h + 3 * h * inter
    params = 3 * p * p * h + h + layers * layer + h + h * merge**2 * h + _linear(h, text, bias) + _linear(text, text, bias)
    side = size // p
    return _fields(params, h, inter, True, side * side, (side // merge) ** 2 + side // merge,
                   "modeling_pixtral.py PixtralVisionModel, modeling_mistral3.py Mistral3MultiModalProjector", f"one {size}-px image")  # fmt: skip


def internvl(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """InternVL (modeling_internvl.py InternVLVisionModel, InternVLMultiModalProjector): Conv2d patch
    embedding with bias, a class token, a position table of patches + 1 rows; per layer two norms
    (LayerNorm, or RMSNorm for norm_type rms_norm), q, k, v (biases when attention_bias), the output
    projection with bias, q/k RMSNorms when use_qk_norm, two layer scales, fc1 and fc2 with biases;
    the projector's LayerNorm(4h) and two linears with biases. Up to 12 tiles of 448 px and a
    thumbnail, 256 tokens each (downsample_ratio 0.5)."""
    h, inter, layers = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    size, p = _int(vision, "image_size", 448), _int(vision, "patch_size", 14)
    text = _int(config.get("text_config") or {}, "hidden_size")
    norm = h if vision.get("norm_type", "layer_norm") == "rms_norm" else _layer_norm(h)
    bias = _bool(vision, "attention_bias", False, "vision_config.")
    qk_norm = 2 * h if _bool(vision, "use_qk_norm", False, "vision_config.") else 0
    layer = 2 * norm + 3 * _linear(h, h, bias) + _linear(h, h) + qk_norm + 2 * h + _linear(h, inter) + _linear(inter, h)
    patches = (size // p) ** 2
    ratio = config.get("downsample_ratio", 0.5)
    wide = h * int(1 / ratio) ** 2
    params = (
        _linear(3 * p * p, h)
        + h
        + (patches + 1) * h
        + layers * layer
        + _layer_norm(wide)
        + _linear(wide, text)
        + _linear(text, text)
    )
    tiles = INTERNVL_MAX_TILES + 1
    return _fields(params, h, inter, False, tiles * patches, tiles * int(patches * ratio * ratio),
                   "modeling_internvl.py InternVLVisionModel, InternVLMultiModalProjector", f"{INTERNVL_MAX_TILES} tiles of {size} px and a thumbnail")  # fmt: skip


# transformers' LlavaNextConfig defaults, where a config leaves them out
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# vision_feature_select_strategy: 'default' drops the CLS row, 'full' keeps every row (vLLM llava.py
# _get_vision_feature_select_strategy raises on another value; transformers' LlavaNextConfig likewise)
LLAVA_NEXT_STRATEGIES = ("default", "full")


def llava_next(vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any] | None:
    """LLaVA-NeXT with a SigLIP tower (Granite Vision) as vLLM builds it (llava_next.py, llava.py
    init_vision_tower_for_llava, siglip.py; v0.19.0), None for another tower: Conv2d patch embedding
    with bias and a position table of (image_size / patch)^2 rows; the layers up to the deepest of
    vision_feature_layer, each two LayerNorms, qkv and out with biases, fc1 and fc2 with biases; no
    post-LayerNorm (require_post_norm False) and no pooling head; image_newline (text hidden); the
    projector (hidden * len(vision_feature_layer) -> text hidden -> text hidden, biases when
    multimodal_projector_bias). The largest image: the image_grid_pinpoints entry with the most tokens,
    h/s x w/s tiles of s = image_size and a base tile: g^2 * tiles + g * h/s newlines + the base tile's
    g^2 (one less under the 'default' feature strategy), g = image_size / patch
    (LlavaNextProcessingInfo.get_image_size_with_most_features).

    >>> found = llava_next({"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
    ...     "num_hidden_layers": 27, "image_size": 384}, {"text_config": {"hidden_size": 2048},
    ...     "vision_feature_layer": [-24, -20, -12, -1], "vision_feature_select_strategy": "full",
    ...     "image_grid_pinpoints": [[384, 3840], [3840, 384], [1152, 1152]]})
    >>> found["params"], found["tokens_per_item"], found["patches_per_item"]
    (426622576, 8289, 8019)
    """
    if vision.get("model_type") != "siglip_vision_model":
        return None
    h, inter, depth = _int(vision, "hidden_size"), _int(vision, "intermediate_size"), _int(vision, "num_hidden_layers")
    size, p = _int(vision, "image_size"), _int(vision, "patch_size", 14)
    text = _int(config.get("text_config") or {}, "hidden_size")
    feature = config.get("vision_feature_layer", -2)
    features = feature if isinstance(feature, list) else [feature]
    if not features or not all(isinstance(i, int) and not isinstance(i, bool) and -depth <= i < depth for i in features):
        raise InvalidPreset(f"vision_feature_layer: expected layer indices of the tower's {depth}, got {feature!r}")
    kept = max(depth + i + 1 if i < 0 else i for i in features)  # vllm/model_executor/models/utils.py get_layer_index
    g = size // p
    bias = _bool(config, "multimodal_projector_bias", True)
    params = _siglip_tower(h, inter, kept, p, g * g) + text
    params += _linear(h * len(features), text, bias) + _linear(text, text, bias)
    pinpoints = config.get("image_grid_pinpoints", LLAVA_NEXT_PINPOINTS)
    if not (isinstance(pinpoints, list) and pinpoints and all(
        isinstance(pin, list) and len(pin) == 2 and all(isinstance(x, int) and x >= size for x in pin) for pin in pinpoints
    )):  # fmt: skip
        raise InvalidPreset(f"image_grid_pinpoints: expected [height, width] pairs of at least {size} px, got {pinpoints!r}")
    strategy = config.get("vision_feature_select_strategy", "default")
    if strategy not in LLAVA_NEXT_STRATEGIES:
        raise InvalidPreset(f"vision_feature_select_strategy: expected 'default' or 'full', got {strategy!r}")
    base = g * g - (1 if strategy == "default" else 0)
    best = max(pinpoints, key=lambda pin: g * g * (pin[0] // size) * (pin[1] // size) + g * (pin[0] // size))
    tiles, rows = (best[0] // size) * (best[1] // size), best[0] // size
    tokens = g * g * tiles + g * rows + base
    found = _fields(params, h, inter, False, (tiles + 1) * g * g, tokens,  # the tiles and the base tile
                    "vLLM's llava_next.py LlavaNextForConditionalGeneration (its siglip.py tower, v0.19.0)",
                    f"{best[0]} x {best[1]} px, the image_grid_pinpoints entry with the most tokens", by="")  # fmt: skip
    return found


def _fields(
    params: int,
    hidden: int,
    intermediate: int,
    gated: bool,
    patches: int,
    tokens: int,
    where: str,
    largest: str,
    by: str = "transformers' ",
) -> dict[str, Any]:
    """VisionSpec fields; `by` names whose code `where` is (empty when `where` names it: "vLLM's ...")."""
    return {
        "params": params, "hidden": hidden, "intermediate": intermediate, "gated": gated, "patches_per_item": patches,
        "tokens_per_item": tokens,
        "source": f"vision_config, counted as {by}{where} builds it; the largest image: {largest}",
    }  # fmt: skip


def _resizable(fields: dict[str, Any], patch: int, merge: int) -> dict[str, Any]:
    """A Qwen-VL processor's tower: its largest image follows max_pixels (--mm-processor-kwargs)."""
    return {**fields, "pixels_per_patch": patch * patch, "patches_per_token": merge * merge}


# model_type of the wrapper -> the function that counts its tower
TOWERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]] = {
    "qwen2_vl": qwen2_vl,
    "qwen2_5_vl": qwen2_5_vl,
    "qwen3_vl": qwen3_vl,
    "qwen3_vl_moe": qwen3_vl,
    "qwen3_5": lambda vision, config: qwen3_vl(vision, config, deepstack=False),
    "qwen3_5_moe": lambda vision, config: qwen3_vl(vision, config, deepstack=False),
    "gemma3": siglip_gemma3,
    "gemma4": gemma4,
    "llama4": llama4,
    "mistral3": pixtral,
    "internvl": internvl,
    "kimi_k25": kimi_k25,
    "kimi_vl": kimi_vl,
    "llava_next": llava_next,
}


def tower(config: dict[str, Any], origin: str) -> tuple[dict[str, Any] | None, str | None]:
    """VisionSpec fields for the config's vision_config, or None and why not (no tower, or one of an
    architecture kvcalc does not count: its weights are then left out, and the model says so)."""
    vision = config.get("vision_config")
    if vision is None:
        return None, None
    if not isinstance(vision, dict):
        raise InvalidPreset(f"{origin}: vision_config: expected a mapping")
    arch = str(config.get("model_type", ""))
    count = TOWERS.get(arch)
    if count is None:
        return None, (
            f"its vision tower ({arch or 'no model_type'} vision_config) is not counted: kvcalc counts the towers of"
            f" {', '.join(sorted(TOWERS))}; give vision.params in a model YAML"
        )
    try:
        fields = count(vision, config)
    except InvalidPreset as exc:
        raise InvalidPreset(f"{origin}: {exc}") from None
    if fields is None:  # the wrapper counted, not this tower (LLaVA-NeXT: SigLIP only)
        return None, (
            f"its vision tower ({arch} with a {vision.get('model_type') or 'unnamed'} vision_config) is not counted;"
            " give vision.params in a model YAML"
        )
    return {**fields, "source": f"{origin}: {fields['source']}"}, None
