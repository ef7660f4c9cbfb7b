"""Dummy inputs: one tiny batch that runs a model's forward, built from its config and signature.

A Hugging Face model announces what it eats through ``main_input_name``, the parameters of its
``forward`` and its config: text (``input_ids``), images (``pixel_values``, sized from the config or
its vision sub-config), audio (``input_features`` spectrograms, ``input_values`` waveforms), time
series (``past_values``), video (5-D ``pixel_values``, ``pixel_values_videos``), and vision towers
that take flattened patches with a ``grid_thw``. Where a layout cannot be told from the config
(e.g. ``(batch, mel, frames)`` against ``(batch, frames, features)``) several candidate batches are
offered, and the analysis runs the first one the model accepts. On ``meta`` a large shape costs
nothing, so sizes follow the config rather than being kept small.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Iterator

import torch
from torch import nn

from ..roles import GammaAnalysisError

_BATCH, _SEQ = 2, 8  # batch 2: BatchNorm refuses a single value per channel
_DEFAULT_IMAGE = 224

# Integer inputs that are token ids of the text side.
_ID_INPUTS = ("input_ids", "decoder_input_ids", "qformer_input_ids", "text_input_ids", "labels_ids")
# Inputs that turn a text model into a multimodal one when the forward accepts them (tried second).
_MODAL_EXTRAS = ("pixel_values",)


def _params(forward) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(forward).parameters)
    except (TypeError, ValueError):
        return {}


def _accepts(forward, name: str) -> bool:
    params = _params(forward)
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _required(forward) -> list[str]:
    out = []
    for name, p in _params(forward).items():
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            out.append(name)
    return out


def _first_param_module(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            return module
    return None


def _configs(config) -> list:
    """``config`` and its sub-configs (vision/audio/text/backbone…), nearest first, at most 3 levels deep.

    The depth bound matters: some configs expose a sub-config as a property that builds a new object on every
    access (WavTokenizer's ``encoder_config``), so identity alone never closes the walk.
    """
    out, seen, queue = [], set(), [(config, 0)]
    while queue:
        c, depth = queue.pop(0)
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        out.append(c)
        if depth >= 3:
            continue
        for key in list(getattr(c, "sub_configs", {}) or {}) + ["vision_config", "audio_config", "backbone_config",
                                                                 "encoder_config", "text_config"]:
            sub = getattr(c, key, None)
            if sub is not None and hasattr(sub, "to_dict"):
                queue.append((sub, depth + 1))
    return out


def _find(config, *keys, kind=int, default=None):
    """The first value of ``keys`` (in that order) on ``config`` or its sub-configs."""
    for c in _configs(config):
        for key in keys:
            value = getattr(c, key, None)
            if isinstance(value, kind) and not isinstance(value, bool):
                return value
    return default


def _image_hw(config) -> tuple[int, int]:
    for c in _configs(config):
        size = getattr(c, "image_size", None)
        if isinstance(size, dict):
            size = (size.get("height"), size.get("width"))
        if isinstance(size, (list, tuple)) and len(size) >= 2 and all(isinstance(s, int) for s in size[:2]):
            return int(size[0]), int(size[1])
        if isinstance(size, int) and not isinstance(size, bool):
            return size, size
    return _DEFAULT_IMAGE, _DEFAULT_IMAGE


class _Builder:
    """Makes each named dummy input for one model, on its device and in its floating dtype."""

    def __init__(self, model: nn.Module, device):
        self.model, self.config, self.device = model, model.config, device
        # Float inputs in the model's own dtype: a bf16/fp16 model refuses float32 activations.
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())

    def zeros(self, *shape):
        return torch.zeros(*shape, device=self.device, dtype=self.dtype)

    def ids(self, *shape):
        return torch.ones(*shape, dtype=torch.long, device=self.device)

    def channels(self) -> int:
        return _find(self.config, "num_channels", "in_channels", "num_input_channels", default=3)

    def image(self):
        h, w = _image_hw(self.config)
        frames = _find(self.config, "num_frames", "frames_per_clip")
        if frames is not None:  # video models (VideoMAE, ViViT, X-CLIP…): (B, T, C, H, W), or (B, C, T, H, W)
            return [self.zeros(_BATCH, frames, self.channels(), h, w),
                    self.zeros(_BATCH, self.channels(), frames, h, w),
                    self.zeros(_BATCH, self.channels(), h, w)]
        return [self.zeros(_BATCH, self.channels(), h, w)]

    def video(self):
        h, w = _image_hw(self.config)
        frames = _find(self.config, "num_frames", "frames_per_clip", default=16)
        return [self.zeros(_BATCH, frames, self.channels(), h, w), self.zeros(_BATCH, self.channels(), frames, h, w)]

    def spectrogram(self):
        mel = _find(self.config, "feature_projection_input_dim", "num_mel_bins", "feature_size",
                    "input_feat_per_channel", "n_mels", "num_mels", "input_feature_size", "input_feat_size",
                    default=80)
        frames = _find(self.config, "max_source_positions", default=None)
        frames = 2 * frames if frames else 400  # Whisper-style encoders need exactly 2 × their positions
        channels = _find(self.config, "input_channels", default=1)
        mel_total = mel * channels if channels and channels > 1 else mel
        return [self.zeros(_BATCH, mel, frames), self.zeros(_BATCH, frames, mel_total), self.zeros(_BATCH, 400, mel)]

    def waveform(self):
        # mono waveform, with or without a channel axis
        out = [self.zeros(_BATCH, 16_000), self.zeros(_BATCH, 1, 16_000)]
        length, mel = _find(self.config, "max_length"), _find(self.config, "num_mel_bins")
        if length and mel:  # spectrogram transformers name their (frames, mel) input `input_values` too
            out.insert(0, self.zeros(_BATCH, length, mel))
        channels = _find(self.config, "audio_channels", "channels")
        if channels:
            out.append(self.zeros(_BATCH, channels, 16_000))
        # Codecs whose encoder and decoder lengths must meet: a length every usual hop divides (1920 = Mimi's,
        # 320, 480, 512, 640, 960; 15,360 = 2¹⁰·3·5).
        out.append(self.zeros(_BATCH, 1, 15_360))
        return out

    def series(self):
        length = _find(self.config, "context_length", "context_len", "max_context_length", default=64)
        channels = _find(self.config, "num_input_channels", "input_size", default=1)
        # A long context first cut to 512 steps: some forecasters loop in Python over every patch of it
        # (TimesFM 2.5: 16,384 steps = 512 patches took ~8 s on meta); the full length stays as a fallback
        # for models that need exactly their context.
        lengths = [min(length, 512)] + ([length] if length > 512 else [])
        return [t for n in lengths for t in (self.zeros(_BATCH, n, channels), self.zeros(_BATCH, n))]

    def patches_and_grid(self, tensor_name: str, grid_name: str) -> dict:
        """Vision towers of Qwen2-VL-style models: flattened patches of one image plus its (t, h, w) grid."""
        merge = _find(self.config, "spatial_merge_size", "merge_size", default=2)
        patch = _find(self.config, "patch_size", "spatial_patch_size", default=14)
        temporal = _find(self.config, "temporal_patch_size", default=2)
        channels = _find(self.config, "in_channels", "in_chans", "num_channels", default=3)
        side = 2 * merge
        grid = torch.tensor([[1, side, side]], dtype=torch.long, device=self.device)
        n = side * side
        return {tensor_name: [self.zeros(n, channels * temporal * patch * patch),
                              self.zeros(n, channels * patch * patch)],
                grid_name: [grid]}

    def naflex_patches(self) -> dict:
        patch = _find(self.config, "patch_size", default=16)
        side = 4
        return {"pixel_values": [self.zeros(_BATCH, side * side, self.channels() * patch * patch)],
                "pixel_attention_mask": [torch.ones(_BATCH, side * side, dtype=torch.long, device=self.device)],
                "spatial_shapes": [torch.tensor([[side, side]] * _BATCH, dtype=torch.long, device=self.device)]}

    def patches_with_positions(self) -> dict:
        """Towers fed patches with each one's (row, column) (Gemma 4's vision model): ``(batch, patches, C·p·p)``
        and ``(batch, patches, 2)`` over a square grid whose side the usual pooling kernels (2, 3) divide."""
        patch, side = _find(self.config, "patch_size", default=16), 6
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        positions = torch.stack([rows.flatten(), cols.flatten()], dim=-1).expand(_BATCH, -1, -1)
        return {"pixel_values": [self.zeros(_BATCH, side * side, self.channels() * patch * patch)],
                "pixel_position_ids": [positions.to(self.device).contiguous()]}

    def tiles(self) -> dict:
        """Tiled image towers (Mllama): ``(batch, images, tiles, C, H, W)`` pixels, each image's aspect-ratio id
        and which of its ``max_num_tiles`` tiles hold pixels (all of them here)."""
        tiles = _find(self.config, "max_num_tiles", default=4)
        h, w = _image_hw(self.config)
        return {"pixel_values": [self.zeros(_BATCH, 1, tiles, self.channels(), h, w)],
                "aspect_ratio_ids": [self.ids(_BATCH, 1)],
                "aspect_ratio_mask": [self.ids(_BATCH, 1, tiles)]}

    def build(self, name: str) -> list:
        """Candidate tensors for the input ``name`` (first = most likely), or ``[]`` if unknown."""
        if name in _ID_INPUTS or name.endswith("input_ids"):
            return [self.ids(_BATCH, _SEQ)]
        if name in ("attention_mask", "decoder_attention_mask", "token_type_ids"):
            return [self.ids(_BATCH, _SEQ) if "type" not in name else torch.zeros(_BATCH, _SEQ, dtype=torch.long,
                                                                                    device=self.device)]
        if name == "pixel_values":
            return self.image()
        if name in ("pixel_values_videos", "video_values", "videos"):
            return self.video()
        if name in ("input_features", "audio_features", "audio_mel", "input_mel"):
            return self.spectrogram()
        if name in ("input_values", "audio_values", "waveform", "raw_audio"):
            return self.waveform()
        if name in ("past_values",):
            return self.series()
        if name in ("past_observed_mask",):
            return [torch.ones(*s.shape, dtype=torch.bool, device=self.device) for s in self.series()]
        if name.endswith("_padding"):  # time series: 0 = an observed value, same shape as the values
            return [torch.zeros(_BATCH, n, dtype=torch.long, device=self.device)
                    for n in (_find(self.config, "context_length", "context_len", default=64),)]
        if name.endswith("_mask") and name not in ("attention_mask", "decoder_attention_mask"):
            return [torch.ones(_BATCH, n, dtype=torch.long, device=self.device) for n in (_SEQ, 16, 60, 400)]
        if name in ("hidden_states", "inputs_embeds", "encoder_hidden_states"):
            # Sub-models fed by another module (projector-fed encoders, a decoder half): a sequence of vectors
            # of the model's width.
            width = _find(self.config, "hidden_size", "d_model", "embed_dim", "n_embd", "dim")
            return [self.zeros(_BATCH, _SEQ, width)] if width else []
        if name == "bbox":
            return [torch.zeros(_BATCH, _SEQ, 4, dtype=torch.long, device=self.device)]
        return self.build_more(name)

    def width(self) -> int | None:
        return _find(self.config, "hidden_size", "d_model", "embed_dim", "n_embd", "dim")

    def build_more(self, name: str) -> list:
        """Inputs of rarer forwards, each shaped from the config: image prompts, flattened patches with their
        (row, column) prefix, a sub-model's embeddings or context, reinforcement-learning trajectories, a time
        series' frequency class, a task prompt. Asked only for inputs a forward requires or a late batch offers,
        so no model that runs on the batches above reads a different one."""
        width = self.width()
        if name in ("image", "prompt_pixel_values", "prompt_masks"):
            return self.image()[:1]
        if name == "flattened_patches":  # Pix2Struct: (batch, patches, 2 + C·p·p), the 2 = each patch's row, column
            size = _find(self.config, "patch_embed_hidden_size", default=768)
            return [self.zeros(_BATCH, 16, size + 2)]
        if name in ("inputs", "context", "context_hidden_states", "vision_features", "latents", "text_features",
                    "decoder_queries", "vision_pos_encoding", "vision_pos_embeds", "backbone_features") or (
                name.endswith("_embeds") and name not in ("inputs_embeds", "decoder_inputs_embeds")):
            # A module fed by another one: a sequence of vectors of the model's width (or channels-first)
            out = [self.zeros(_BATCH, _SEQ, width), self.zeros(_BATCH, width, _SEQ)] if width else []
            return out + (self.waveform()[:1] if name == "inputs" else [])
        if name == "states":
            return [self.zeros(_BATCH, _SEQ, _find(self.config, "state_dim", default=1))]
        if name == "actions":
            return [self.zeros(_BATCH, _SEQ, _find(self.config, "act_dim", "action_dim", default=1))]
        if name in ("rewards", "returns_to_go"):
            return [self.zeros(_BATCH, _SEQ, 1)]
        if name in ("timesteps", "freq"):  # an episode step per position; TimesFM's frequency class per series
            return [torch.zeros(_BATCH, _SEQ if name == "timesteps" else 1, dtype=torch.long, device=self.device)]
        if name == "mask":  # a sub-model's padding mask over its input sequence
            return [torch.ones(_BATCH, _SEQ, dtype=torch.bool, device=self.device)]
        if name == "merge_sizes":  # one spatial merge size per image of a flattened-patch batch
            merge = _find(self.config, "spatial_merge_size", "merge_size", default=2)
            return [torch.tensor([merge], dtype=torch.long, device=self.device)]
        if name == "task_inputs":  # OneFormer: the tokenized task prompt
            return [self.ids(_BATCH, _find(self.config, "task_seq_len", default=_SEQ))]
        return []

    def build_required(self, name: str) -> list:
        """Inputs built only where a forward requires them (or a late batch asks), never for the batch of every
        declared input: a vision model whose forward calls its image ``hidden_states`` and states no width (its
        main input is ``pixel_values``), a patch count with each token's patch (two tokens a patch, the first
        ``num_patches`` positions: DeepSeek-OCR 2's image prefix, BLT's byte patches), and the waveform samples
        behind each spectrogram (``*sample_lengths``: frames × the config's ``hop_length``)."""
        if name == "hidden_states" and getattr(self.model, "main_input_name", None) == "pixel_values":
            return self.image()[:1]
        if name == "num_patches":
            return [_SEQ // 2]
        if name == "patch_ids":
            return [(torch.arange(_SEQ, device=self.device) // 2).expand(_BATCH, -1).contiguous()]
        hop = _find(self.config, "hop_length")
        if name.endswith("sample_lengths") and hop:
            frames = self.spectrogram()[0].shape[-1]
            return [torch.full((_BATCH,), frames * hop, dtype=torch.long, device=self.device)]
        return []


def candidate_inputs(model: nn.Module, device: torch.device | str = "cpu") -> Iterator[dict | tuple]:
    """Dummy batches for ``model``'s forward, most likely first; the analysis runs the first that works.

    Raises ``GammaAnalysisError`` when not even one batch can be built (an input whose meaning cannot be
    told from its name and the config), naming ``inputs=`` and ``gamma_report=``.
    """
    config = getattr(model, "config", None)
    if config is None:
        yield _plain_inputs(model, device)
        return
    forward = model.forward
    b = _Builder(model, device)
    params = _params(forward)
    options = _main_options(model, b, params)
    extras = {n: b.build(n) for n in _MODAL_EXTRAS if n not in options and n in params}
    use_cache = {"use_cache": False} if "use_cache" in params else {}  # caches are outputs that are not the loss
    for width in range(max([len(v) for v in options.values()] + [len(v) for v in extras.values()] + [1])):
        batch = {n: v[min(width, len(v) - 1)] for n, v in options.items()}
        if not batch:
            break
        # With the other modality's input first: dual encoders (CLIP, SigLIP…) need both towers' inputs, and
        # a multimodal model run on both shows the roles of both towers. Then the main input(s) alone.
        extra = {n: v[min(width, len(v) - 1)] for n, v in extras.items() if v}
        if extra:
            yield {**batch, **extra, **use_cache}
        yield {**batch, **use_cache}
    base = {n: v[0] for n, v in options.items()}
    for late in _late_inputs(model, b, params, options):
        yield {**base, **late, **use_cache}
    if not use_cache and _accepts(forward, "use_cache") and any(hasattr(c, "use_cache") for c in _configs(config)):
        # A forward that takes `use_cache` through **kwargs (a VLM passing it on to its text model) and builds a
        # cache its layers cannot all fill (linear-attention layers only: no sequence length to read).
        yield {**base, "use_cache": False}
    # Last of all, the layouts whose sizes a config field states, after every batch above (so that no model that
    # runs on one of those reads one of these)
    for late in _stated_layouts(config, b, params, options, base):
        yield {**base, **late, **use_cache}


def _main_options(model: nn.Module, b: _Builder, params: dict) -> dict[str, list]:
    """``{input name: candidate tensors}`` for the inputs every batch holds: the main input(s) when the forward names
    them (or takes ``**kwargs`` and requires nothing else), every input it requires, and an encoder-decoder's
    ``decoder_input_ids``. Inputs made together (flattened patches and their grid, NaFlex patches, tiles, patches
    with their positions) come from one builder method. Raises ``GammaAnalysisError`` for an input it cannot make."""
    forward, config = model.forward, model.config
    main = getattr(model, "main_input_name", "input_ids")
    mains = list(main) if isinstance(main, (list, tuple)) else [main]
    required = _required(forward)
    names = [n for n in mains if n in params or (not required and _accepts(forward, n))]
    names += [n for n in required if n not in names]
    grid_name = next((n for n in ("grid_thw", "image_grid_thw") if n in names), None)
    fixed: dict[str, list] = {}
    if grid_name is not None:  # flattened patches + their grid
        tensor_name = next((n for n in ("hidden_states", "pixel_values") if n in names), "hidden_states")
        fixed = b.patches_and_grid(tensor_name, grid_name)
    elif "spatial_shapes" in names:  # NaFlex towers (SigLIP 2): patches, their mask and the (h, w) grid of each image
        fixed = b.naflex_patches()
    elif "aspect_ratio_ids" in names:
        fixed = b.tiles()
    elif "pixel_position_ids" in names:
        fixed = b.patches_with_positions()
    if (getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params
            and "decoder_input_ids" not in names):
        names.append("decoder_input_ids")
    options: dict[str, list] = {}
    for name in names:
        built = fixed.get(name) or b.build(name) or b.build_required(name)
        if not built:
            raise GammaAnalysisError(
                f"cannot build a dummy `{name}` for {type(model).__name__} (main input {main!r}); pass `inputs=` to "
                "classify_gammas (a dict of tensors for one tiny batch, e.g. what your data collator produces), or "
                "a precomputed `gamma_report=` to the Trainer")
        options[name] = built
    return options


def _late_inputs(model: nn.Module, b: _Builder, params: dict, options: dict) -> list[dict]:
    """Batches with inputs a forward declares optional yet cannot run without, or without which a tower is
    never reached: boxes for layout models (``bbox``), LXMERT's region features and positions, X-MOD's language
    ids, a VLM's ``image_sizes`` / patch grid / one-image-per-sample layout, the text of a pixel-first VLM.

    Tried after every batch above, so that a model that runs without them reads the same batch as before."""
    config = model.config
    extra: dict[str, torch.Tensor] = {}
    if "bbox" in params and "bbox" not in options:
        extra["bbox"] = torch.zeros(_BATCH, _SEQ, 4, dtype=torch.long, device=b.device)
    if "visual_feats" in params:
        regions = 10
        extra["visual_feats"] = b.zeros(_BATCH, regions, _find(config, "visual_feat_dim", default=2048))
        if "visual_pos" in params:
            extra["visual_pos"] = b.zeros(_BATCH, regions, _find(config, "visual_pos_dim", default=4))
    if "lang_ids" in params:
        extra["lang_ids"] = torch.zeros(_BATCH, dtype=torch.long, device=b.device)
    if "input_ids" in params and "input_ids" not in options and "pixel_values" in options:
        extra["input_ids"] = b.ids(_BATCH, _SEQ)
    batches = [extra] if extra else []
    if "pixel_values" in params:
        image = {"pixel_values": b.image()[0]}
        if "input_ids" in params and "input_ids" not in options:
            image["input_ids"] = b.ids(_BATCH, _SEQ)
        if "image_sizes" in params:  # LLaVA-NeXT, Mistral 3: each image's (height, width)
            h, w = _image_hw(config)
            batches.append({**extra, **image, "image_sizes": torch.tensor([[h, w]] * _BATCH, device=b.device)})
        if "image_grid_thw" in params:  # Qwen2-VL style: flattened patches and their grid
            grid = b.patches_and_grid("pixel_values", "image_grid_thw")
            batches += [{**extra, **image, "pixel_values": t, "image_grid_thw": grid["image_grid_thw"][0]}
                        for t in grid["pixel_values"]]
        # Idefics 2/3, SmolVLM: (batch, images per sample, channels, height, width)
        batches.append({**extra, **image, "pixel_values": image["pixel_values"].unsqueeze(1)})
        if "grid_thw" in params and "grid_thw" not in options:  # a tower whose grid is optional (PaddleOCR-VL)
            grid = b.patches_and_grid("pixel_values", "grid_thw")
            batches += [{**extra, "pixel_values": t, "grid_thw": grid["grid_thw"][0]} for t in grid["pixel_values"]]
    # After all of the above, so that a model that runs on one of them reads the same batch as before.
    return batches + _layout_inputs(config, b, params, options)


# Values a default config leaves unset (``None``) that a forward reads. A Hub checkpoint's config sets them, so a
# model built from a bare config (``AutoConfig.for_model``, as `hf-gammareg inspect` does for a model type) fails
# where the Trainer on the real checkpoint would run. None of them changes which module's output reaches which:
# a router that keeps 1 expert per token on meta still routes every token through every expert (torch answers
# `nonzero` as if all were set), a window as long as the positions masks nothing, a pad or placeholder id is a
# token id like any other.
_TOKEN_GAPS = ("image_token_id", "image_token_index", "video_token_id", "audio_token_id")
_TOP_K = ("num_experts_per_tok", "top_k", "topk", "moe_top_k", "topk_group", "n_group")


def _gap_values(config) -> dict[str, int]:
    """``{field: value}`` for the unset fields of one config that a forward may need, from its own fields."""
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int):
        vocab = _find(config, "vocab_size")
    out: dict[str, int] = {}
    fields = {**vars(config), **{k: getattr(config, k, None) for k in getattr(config, "attribute_map", {}) or {}}}
    for key in fields:
        if getattr(config, key, 0) is not None:
            continue
        if key == "pad_token_id" and isinstance(vocab, int):
            # the end-of-text id where the config has one (what tokenizers without a pad token reuse), else 0
            eos = getattr(config, "eos_token_id", None)
            out[key] = eos if isinstance(eos, int) and 0 <= eos < vocab else 0
        elif key in _TOKEN_GAPS and isinstance(vocab, int) and vocab > 2:
            out[key] = vocab - 1  # the dummy text is all 1s: the last id stands apart from it
        elif key in _TOP_K and _find(config, "num_experts", "n_routed_experts", "num_local_experts"):
            out[key] = 1
        elif key in ("sliding_window", "attention_chunk_size"):
            out[key] = _find(config, "max_position_embeddings", default=4096)
    return out


def with_config_gaps_filled(model: nn.Module, copy) -> tuple[nn.Module, list[str]] | None:
    """A copy of ``model`` (made by ``copy``, a meta copy) with the values its config leaves unset and its forward
    needs filled in from the config's own fields (see ``_gap_values``), and those fields as ``config.key = value``;
    ``None`` when there is nothing to fill. The user's model and config are never touched: the copy has its own
    config (and its modules their own attributes, where they took a value such as a router's top-k at init)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    run = copy(model)
    filled = []
    for c in _configs(run.config):
        for key, value in _gap_values(c).items():
            try:
                setattr(c, key, value)
            except Exception:  # noqa: BLE001 - a guarded attribute stays as it is
                continue
            filled.append(f"{type(c).__name__}.{key} = {value}")
    for name, module in run.named_modules():
        for key in _TOP_K:
            if key in vars(module) and vars(module)[key] is None:
                setattr(module, key, 1)
                filled.append(f"{name or type(run).__name__}.{key} = 1")
        # Multimodal RoPE whose (t, h, w) sections fall back to a checkpoint's default when `rope_parameters` has
        # no `mrope_section`, yet the frequencies were sized from this config's head_dim: the sections scaled to
        # the frequencies, in the same proportions.
        sections, inv_freq = getattr(module, "mrope_section", None), getattr(module, "inv_freq", None)
        if (isinstance(sections, (list, tuple)) and sections and all(isinstance(x, int) for x in sections)
                and isinstance(inv_freq, torch.Tensor) and inv_freq.dim() == 1
                and inv_freq.shape[0] != sum(sections) and inv_freq.shape[0] >= len(sections)):
            n, total = inv_freq.shape[0], sum(sections)
            scaled = [max(1, x * n // total) for x in sections]
            scaled[-1] += n - sum(scaled)
            if scaled[-1] >= 1:
                module.mrope_section = type(sections)(scaled)
                filled.append(f"{name}.mrope_section = {scaled}")
    return (run, filled) if filled else None


def _layout_inputs(config, b: _Builder, params: dict, options: dict) -> list[dict]:
    """Batches for layouts a forward declares optional yet needs, each read from the config, in this order (each
    group tried after the one before, so that a model that runs on an earlier one reads the same batch as before):
    token and audio layouts, vision layouts, the inputs a forward declares, then ``_config_layouts``."""
    base = {n: v[0] for n, v in options.items()}
    return (_token_and_audio_layouts(config, b, params, options, base)
            + _vision_layouts(config, b, options, base)
            + _declared_layouts(config, b, params, options, base)
            + _config_layouts(config, b, params, options))


def _token_and_audio_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """NaFlex patches with their ``spatial_shapes``, token ids with a codebook axis, 4-D spectrograms, and a
    sub-model's input at the width its first layer takes."""
    out: list[dict] = []
    if "spatial_shapes" in params and "spatial_shapes" not in options and "pixel_values" in params:
        naflex = {n: v[0] for n, v in b.naflex_patches().items() if n in params}
        out.append({**base, **naflex})
    # Audio-token models whose ids carry one row per codebook: (batch, seq, codebooks), (batch, codebooks, seq)
    # or the codebooks folded into the batch (MusicGen's decoder).
    books = _codebooks(config)
    ids = [n for n in ("input_ids", "decoder_input_ids") if n in options]
    if books and books > 1 and ids:
        for shape in ((_BATCH, _SEQ, books), (_BATCH, books, _SEQ), (_BATCH * books, _SEQ)):
            for names in (ids[-1:], ids):  # the decoder's codes alone first (the encoder may read text)
                out.append({**base, **{n: b.ids(*shape) for n in names}})
    if "input_features" in options or ("input_features" in params and "input_ids" in options):
        # (batch, channels, frames, mel): CLAP's fused spectrogram, the audio tower of a text-first dual encoder;
        # for the latter the usual spectrograms too (a speech LM whose text comes first)
        mel = _find(config, "num_mel_bins", "feature_size", "n_mels", default=80)
        out.append({**base, "input_features": b.zeros(_BATCH, 1, _find(config, "spec_size", default=400), mel)})
        if "input_features" not in options:
            out += [{**base, "input_features": t} for t in b.spectrogram()]
    width = b.width()
    for name in ("input_features", "input_values", "hidden_states"):
        # A sub-model fed by a front end it does not own (SpeechT5 without its pre-nets, a speech encoder behind a
        # feature stacker): (batch, frames, width), the width its input layer takes
        if name in options and options[name][0].is_floating_point():
            for w in dict.fromkeys(x for x in (_find(config, "input_dim", "input_size", "feature_dim"), width) if x):
                out.append({**base, name: b.zeros(_BATCH, _SEQ, w)})
            # channels first, long enough for a convolutional stem: a codec half fed audio or latents
            if name == "hidden_states":
                keys = ("channels", "audio_channels", "vae_dim", "hidden_size")
                for c in dict.fromkeys(x for x in (_find(config, k) for k in keys) if x):
                    out.append({**base, name: b.zeros(_BATCH, c, 15_360 if c <= 2 else 64)})
    return out


def _codebooks(config) -> int | None:
    """How many codebooks (audio-token streams) the config states."""
    return _find(config, "num_codebooks", "num_channels", "num_quantizers", "n_q")


def _vision_layouts(config, b: _Builder, options: dict, base: dict) -> list[dict]:
    """Flattened grid patches as small images, video frames folded into the batch, image pairs, and the image large
    enough for every scale of a multi-scale encoder."""
    out: list[dict] = []
    grid_name = next((n for n in ("grid_thw", "image_grid_thw") if n in options), None)
    if grid_name is not None:  # flattened patches as small images, (patches, C, p, p) or (patches, C, T, p, p)
        tensor_name = next((n for n in ("hidden_states", "pixel_values") if n in options), None)
        patch = _find(config, "patch_size", "spatial_patch_size", default=14)
        temporal = _find(config, "temporal_patch_size", default=2)
        if tensor_name is not None:
            n = options[tensor_name][0].shape[0]
            channels = _find(config, "in_channels", "in_chans", "num_channels", default=3)
            out += [{**base, tensor_name: b.zeros(n, channels, patch, patch)},
                    {**base, tensor_name: b.zeros(n, channels, temporal, patch, patch)}]
    image = next((t for t in options.get("pixel_values", []) if t.dim() == 4), None)
    if image is not None:
        frames = _find(config, "num_frames")
        if frames:  # video towers fed frames folded into the batch (X-CLIP): (batch·frames, C, H, W)
            out.append({**base, "pixel_values": image.repeat(frames, 1, 1, 1)})
        # image pairs (keypoint matchers): (batch, 2, C, H, W)
        out.append({**base, "pixel_values": torch.stack([image, image], dim=1)})
        ratios = _find(config, "scaled_images_ratios", kind=(list, tuple))
        patch = _find(config, "patch_size")
        if ratios and patch and min(ratios) > 0:  # DepthPro: the smallest scale must still hold one patch
            side = int(round(patch / min(ratios)))
            out.append({**base, "pixel_values": b.zeros(_BATCH, image.shape[1], side, side)})
    return out


def _masks_over_frames(b: _Builder, options: dict, base: dict, mask) -> list[dict]:
    """A mask named after its input (``input_features_mask``, Gemma 3n's ``audio_mel_mask``) over that input's
    frames, for each candidate layout of the input: ``(batch, frames)`` with frames on either axis, each mask
    ``mask(frames)``."""
    out: list[dict] = []
    for mask_name in [n for n in options if n.endswith("_mask") and n[:-len("_mask")] in options]:
        for tensor in options[mask_name[:-len("_mask")]]:
            if tensor.dim() >= 3:
                for frames in dict.fromkeys((tensor.shape[-1], tensor.shape[1])):
                    out.append({**base, mask_name[:-len("_mask")]: tensor, mask_name: mask(frames)})
    return out


def _declared_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """Masks over an input's frames (1 = kept), concatenated audio with each sample's frame count, every declared
    input the builder can make (with a cross-attention context of its own width), the image-token positions of a
    grounding model, and the patch grid of a vision tower (``target_sizes``)."""
    out = _masks_over_frames(b, options, base,
                             lambda frames: torch.ones(_BATCH, frames, dtype=torch.long, device=b.device))
    if "feature_lens" in params and "input_features" in options:
        # Audio towers fed every sample's frames concatenated, (mel, total frames), with each sample's count
        # (Qwen-Omni): whole chunks of 2 × n_window frames
        mel = _find(config, "num_mel_bins", "feature_size", default=128)
        frames = 2 * _find(config, "n_window", default=50)
        out.append({**base, "input_features": b.zeros(mel, _BATCH * frames),
                    "feature_lens": torch.full((_BATCH,), frames, dtype=torch.long, device=b.device)})
    # Last, every input the forward declares that the builder can make (trajectories: states, actions, rewards…)
    more = {n: b.build(n)[0] for n in params if n not in options and n not in _NOT_DATA and b.build(n)}
    if more:
        out.append({**base, **more})
    cross = _find(config, "encoder_hidden_size", "cross_attention_hidden_size")
    if cross and "encoder_hidden_states" in params:  # a cross-attending module whose context has its own width
        out.append({**base, **more, "encoder_hidden_states": b.zeros(_BATCH, _SEQ, cross)})
    if "image_embeds_position_mask" in params:  # Kosmos-2: which text positions the image's latent queries take
        n = _find(config, "latent_query_num", "num_query_tokens", default=64)
        mask = torch.zeros(_BATCH, n + _SEQ, dtype=torch.long, device=b.device)
        mask[:, 1:1 + n] = 1
        image = {"pixel_values": b.image()[0]} if "pixel_values" in params else {}
        out.append({**base, **image, "input_ids": b.ids(_BATCH, n + _SEQ), "image_embeds_position_mask": mask,
                    **({"attention_mask": b.ids(_BATCH, n + _SEQ)} if "attention_mask" in base else {})})
    if "target_sizes" in params and "pixel_values" in options:  # each image's patch grid (rows, columns)
        h, w = _image_hw(config)
        patch = _find(config, "patch_size", default=14)
        out.append({**base, "target_sizes": torch.tensor([[h // patch, w // patch]] * _BATCH, device=b.device)})
        # Towers that pack every image's patches into one sequence (MiniCPM-V): one image, its grid
        out.append({**{n: v[:1] if isinstance(v, torch.Tensor) and v.dim() else v for n, v in base.items()},
                    "target_sizes": torch.tensor([[h // patch, w // patch]], device=b.device)})
    return out


def _config_layouts(config, b: _Builder, params: dict, options: dict) -> list[dict]:
    """Batches for layouts that config fields state and the batches above miss, tried after all of them (so no
    model that runs on one of those reads another): an image whose VQ code grid is ``num_patches`` a side after
    one halving per level of ``channel_multiplier`` but the last (Janus's VQ-VAE), the embeddings alone where a
    forward takes ``inputs_embeds`` but refuses ids, a boolean mask over an input's frames, a channels-first
    ``(batch, width, height, width)`` map for a sub-model fed another one's feature map, one feature map per level
    for inputs typed as lists of tensors; then ``_patch_layouts``."""
    base = {n: v[0] for n, v in options.items()}
    out: list[dict] = []
    grid, levels = _find(config, "num_patches"), _find(config, "channel_multiplier", kind=(list, tuple))
    if "pixel_values" in options and grid and levels:
        side = grid * 2 ** (len(levels) - 1)
        out.append({**base, "pixel_values": b.zeros(_BATCH, b.channels(), side, side)})
    width = b.width()
    if "input_ids" in options and "inputs_embeds" in params and width:
        # `input_ids=None` (not left out): candidate_inputs lays each late batch over the base one
        out.append({**base, "input_ids": None, "inputs_embeds": b.zeros(_BATCH, _SEQ, width)})
    # A boolean mask named after its input (Gemma 3n's `audio_mel_mask`, True = padding): nothing padded
    out += _masks_over_frames(b, options, base,
                              lambda frames: torch.zeros(_BATCH, frames, dtype=torch.bool, device=b.device))
    for name, tensors in options.items():
        if name.endswith("_embeds") and width and tensors[0].is_floating_point() and tensors[0].dim() == 3:
            out.append({**base, name: b.zeros(_BATCH, width, 4, 4)})
    # Inputs the signature types as lists of tensors (SAM 3's DETR encoder and mask decoder: one feature map per
    # level): channels-first maps, the coarsest small enough that its positions fit the dummy sequence, as many
    # levels as the config's upsampling stages take (one otherwise), each twice the next one's side; with them the
    # other features such a head attends to (a prompt's), a sequence of its width
    listed = [n for n, p in params.items() if re.search(r"\blist\[(torch\.)?Tensor\]", str(p.annotation))
              and (n in options or b.build(n))]
    if listed and width:
        levels = 1 + (_find(config, "num_upsampling_stages") or 0)
        maps = [b.zeros(_BATCH, width, 2 ** (levels - i), 2 ** (levels - i)) for i in range(levels)]
        features = {n: b.zeros(_BATCH, _SEQ, width) for n in params
                    if n.endswith("_features") and n not in options and n not in listed}
        out.append({**base, **features, **{n: list(maps) for n in listed}})
    return out + _patch_layouts(config, b, params, options, base)


def _patch_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """Images already cut into patches, a grid tower fed a sequence of patch images, Pix2Struct patches with their
    own mask, IDEFICS' image-per-position mask, a codec fed waveform and features together, an encoder-decoder
    without its pre-nets, and boxes read as fractions of the page."""
    out: list[dict] = []
    width = b.width()
    image = options.get("pixel_values", [None])[0]
    patch = _find(config, "patch_size")
    if image is not None and image.dim() == 4 and patch:
        # Images already cut into patches, (batch, patches, C·p·p) (Molmo 2's vision tower)
        h, w = _image_hw(config)
        out.append({**base, "pixel_values": b.zeros(_BATCH, (h // patch) * (w // patch), b.channels() * patch * patch)})
    grid_name = next((n for n in ("grid_thw", "image_grid_thw") if n in params), None)
    if grid_name and patch and "pixel_values" in options:
        # A grid tower fed one sequence of patch images, (1, patches, C, p, p) (PaddleOCR-VL's vision model)
        grid = b.patches_and_grid("pixel_values", grid_name)[grid_name][0]
        n = int(grid.prod())
        out.append({**base, "pixel_values": b.zeros(1, n, b.channels(), patch, patch), grid_name: grid})
    if "flattened_patches" in params and "attention_mask" in params:
        # Pix2Struct-style patches whose mask is over the patches, not the text
        patches = b.build("flattened_patches")[0]
        out.append({**base, "flattened_patches": patches,
                    "attention_mask": torch.ones(*patches.shape[:2], dtype=torch.long, device=b.device)})
    if "image_attention_mask" in params and "pixel_values" in params:
        # IDEFICS: (batch, images, C, H, W) and which images each text position sees, (batch, text, images)
        out.append({**base, "pixel_values": b.image()[0].unsqueeze(1),
                    "image_attention_mask": torch.ones(_BATCH, _SEQ, 1, dtype=torch.long, device=b.device)})
    hop = _find(config, "hop_length")
    if hop and "input_values" in options and "input_features" in options:
        # A codec fed the waveform and its features together (X-Codec 2): the features one frame per hop
        mel = options["input_features"][0].shape[1]
        out.append({**base, "input_values": b.zeros(_BATCH, 1, 50 * hop),
                    "input_features": b.zeros(_BATCH, 50, mel)})
    if "decoder_input_values" in params and width and "input_values" in options:
        # An encoder-decoder without its pre-nets (SpeechT5's bare model): both sides fed vectors of its width
        out.append({**base, "input_values": b.zeros(_BATCH, _SEQ, width),
                    "decoder_input_values": b.zeros(_BATCH, _SEQ, width)})
    if "bbox" in params and "pixel_values" in params:
        # Layout models that read the boxes as fractions of the page (UDOP: clipped to [0, 1]), with the page image
        out.append({**base, "bbox": b.zeros(_BATCH, _SEQ, 4), "pixel_values": b.image()[0]})
    return out


def _stated_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """Layouts whose sizes a config field states, tried after every other batch (``candidate_inputs``): see
    ``_stated_audio_layouts``, ``_stated_image_layouts`` and ``_stated_context_layouts``."""
    return (_stated_audio_layouts(config, b, params, options, base)
            + _stated_image_layouts(config, b, params, options, base)
            + _stated_context_layouts(config, b, params, options, base))


def _stated_audio_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """A waveform whose length the encoder's total stride divides (``samples_per_token``, the product of its patch
    sizes: Muse Spark's), mel frames that come ``audio_length_per_tok`` to a text token and are added to the text
    position by position (Voxtral Realtime), and ids of any other token input with a codebook axis (Inkling's
    ``audio_input_ids``, one per mel bin) or beside a cross-attention context of the width the config states
    (Dia's decoder)."""
    out: list[dict] = []
    stride = _find(config, "samples_per_token")
    if stride and "input_values" in options:
        length = stride * max(1, round(16_000 / stride))
        out += [{**base, "input_values": b.zeros(_BATCH, length)}, {**base, "input_values": b.zeros(_BATCH, 1, length)}]
    per_token = _find(config, "audio_length_per_tok")
    if per_token and "input_features" in params and "input_ids" in options:
        mel = _find(config, "num_mel_bins", "feature_size", "n_mels", default=80)
        out.append({**base, "input_features": b.zeros(_BATCH, mel, _SEQ * per_token)})
    books = _codebooks(config)
    if not books or books < 2:
        return out
    for name in [n for n in options if n.endswith("input_ids") and n not in ("input_ids", "decoder_input_ids")]:
        out += [{**base, name: b.ids(_BATCH, _SEQ, books)}, {**base, name: b.ids(_BATCH, books, _SEQ)}]
    ids = next((n for n in ("decoder_input_ids", "input_ids") if n in options), None)
    if ids and "encoder_hidden_states" in params:
        for w in _foreign_widths(config, b.width()):
            out.append({**base, ids: b.ids(_BATCH, _SEQ, books), "encoder_hidden_states": b.zeros(_BATCH, _SEQ, w)})
    return out


def _stated_image_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """An image prompt and its mask painted above the image in one canvas of the config's ``image_size`` (SegGPT:
    each half its height), an image whose patch grid the config's ``num_windows`` divides (RF-DETR's windowed
    DINOv2), frames at ``max_img_size`` (TVP's visual prompter pads to it), and a grid tower fed one
    ``(p·m, p·m, C)`` tile per merged token with the grid counted in merged tokens (Inkling 2's vision model)."""
    out: list[dict] = []
    image = options.get("pixel_values", [None])[0]
    h, w = _image_hw(config)
    if image is not None and image.dim() == 4 and "prompt_pixel_values" in params and h % 2 == 0:
        half = b.zeros(_BATCH, image.shape[1], h // 2, w)
        out.append({**base, **{n: half for n in ("pixel_values", "prompt_pixel_values", "prompt_masks")
                               if n in params}})
    windows, patch = _find(config, "num_windows"), _find(config, "patch_size")
    if image is not None and image.dim() == 4 and windows and patch:
        tile = patch * windows
        side = tile * -(-max(h, w) // tile)
        out.append({**base, "pixel_values": b.zeros(_BATCH, image.shape[1], side, side)})
    size = _find(config, "max_img_size", "max_image_size")
    frames = (options["pixel_values"] if "pixel_values" in options
              else b.image() if "pixel_values" in params else [None])[0]
    if frames is not None and frames.dim() >= 4 and size and (h, w) != (size, size):
        batch = {**base, "pixel_values": b.zeros(*frames.shape[:-2], size, size)}
        out += [batch, single_example(batch)]  # one example too: TVP's grid embeddings view a batch of one
    grid_name = next((n for n in ("grid_thw", "image_grid_thw") if n in options), None)
    merge = _find(config, "spatial_merge_size", "merge_size")
    if grid_name and merge and patch and "pixel_values" in options:
        side = 2  # merged tokens a side
        grid = torch.tensor([[1, side, side]], dtype=torch.long, device=b.device)
        tile = patch * merge
        out += [{**base, "pixel_values": b.zeros(side * side, tile, tile, b.channels()), grid_name: grid},
                {**base, "pixel_values": b.zeros(side * side, b.channels(), tile, tile), grid_name: grid}]
    return out


def _foreign_widths(config, width: int | None) -> list[int]:
    """Widths of features that come from another module, as the config states them: another model's hidden size
    (``hidden_size_global``, ``cross_hidden_size``, ``encoder_hidden_size``, ``input_size``), hidden states of
    ``len(target_layer_ids)`` layers concatenated, each sub-config's hidden size; the model's own width left out."""
    stated = [_find(config, k) for k in ("hidden_size_global", "cross_hidden_size", "encoder_hidden_size",
                                         "cross_attention_hidden_size", "input_size")]
    layers = _find(config, "target_layer_ids", kind=(list, tuple))
    if layers and width:
        stated.append(len(layers) * width)
    stated += [getattr(c, "hidden_size", None) for c in _configs(config)]
    return [x for x in dict.fromkeys(stated) if isinstance(x, int) and not isinstance(x, bool) and x > 0
            and x != width]


def _stated_context_layouts(config, b: _Builder, params: dict, options: dict, base: dict) -> list[dict]:
    """Features another module hands this one (``*_embeds`` other than the model's own embeddings, a decoder's
    ``last_hidden_state``, a drafter's ``context_hidden_states``) at each width from ``_foreign_widths``, with the
    model's own embeddings beside them or not, and beside a robot policy's camera images (``pixel_values`` with
    one ``pixel_attention_mask`` entry per camera, and the text) where the forward takes them; ``n_docs`` retrieved
    contexts per question with their ``doc_scores`` (RAG without a retriever); and the token patches of a
    byte-level model: a patch count with each token's patch (BLT's local encoder), or ``patch_lengths`` of
    ``patch_size`` each (BLT)."""
    out: list[dict] = []
    width = b.width()
    names = [n for n in params if n in ("last_hidden_state", "context_hidden_states") or (
        n.endswith("_embeds") and n not in ("inputs_embeds", "decoder_inputs_embeds"))]
    cameras = {}
    if "pixel_values" in params and "pixel_attention_mask" in params:
        cameras = {"pixel_values": b.image()[0].unsqueeze(1), "input_ids": b.ids(_BATCH, _SEQ),
                   "pixel_attention_mask": torch.ones(_BATCH, 1, dtype=torch.bool, device=b.device)}
    for name in names:
        for w in _foreign_widths(config, width):
            out.append({**base, **cameras, name: b.zeros(_BATCH, _SEQ, w)})
            if "inputs_embeds" in params and width and not cameras:
                out.append({**base, "inputs_embeds": b.zeros(_BATCH, _SEQ, width), name: b.zeros(_BATCH, _SEQ, w)})
    docs = _find(config, "n_docs")
    if docs and "context_input_ids" in params and "doc_scores" in params:
        # Retrieval-augmented generation without a retriever: n_docs retrieved contexts per question and a score each
        contexts = {n: b.ids(_BATCH * docs, _SEQ) for n in ("context_input_ids", "context_attention_mask")
                    if n in params}
        out.append({**base, **contexts, "doc_scores": b.zeros(_BATCH, docs)})
    if "num_patches" in params and "patch_ids" in params and "num_patches" not in options:
        out.append({**base, **{n: b.build_required(n)[0] for n in ("num_patches", "patch_ids")}})
    patch = _find(config, "patch_size")
    if "patch_lengths" in params and patch and "input_ids" in options and _SEQ % patch == 0:
        lengths = torch.full((_BATCH, _SEQ // patch), patch, dtype=torch.long, device=b.device)
        out.append({**base, "patch_lengths": lengths})
    return out


# Forward arguments that are switches or targets, not data a batch holds.
_NOT_DATA = ("labels", "return_dict", "use_cache", "output_attentions", "output_hidden_states", "return_loss",
             "interpolate_pos_encoding", "past_key_values", "cache", "cache_position", "logits_to_keep", "kwargs")


def inputs_left_out(model: nn.Module, batches) -> list[str]:
    """The data inputs ``model``'s forward declares that none of ``batches`` held: what a user's batch may need."""
    held = {k for batch in batches if isinstance(batch, Mapping) for k in batch}
    return [n for n, p in _params(getattr(model, "forward", None)).items()
            if n not in held and n not in _NOT_DATA and not n.startswith(("output_", "return_"))
            and not n.endswith(("_cache", "_labels", "position_ids"))
            and p.default in (None, inspect.Parameter.empty)  # a default value is a switch, not data
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def input_shapes(inputs) -> dict[str, list[int]]:
    """``{name: shape}`` of the tensors in one batch (a dict, a tuple of positional inputs, or one tensor)."""
    if isinstance(inputs, torch.Tensor):
        return {"input": list(inputs.shape)}
    items = (inputs.items() if isinstance(inputs, Mapping)
             else enumerate(inputs) if isinstance(inputs, (list, tuple)) else ())
    return {str(k): list(v.shape) for k, v in items if isinstance(v, torch.Tensor)}


# transformers' multimodal models check that the text holds one placeholder token per feature the tower emits:
# "Image features and image tokens do not match, tokens: 0, features: 576" (LLaVA and the models copied from it).
_PLACEHOLDER_MISMATCH = re.compile(r"(image|video|audio) features and \w+ tokens do not match.*?features:? (\d+)",
                                   re.IGNORECASE | re.DOTALL)


def with_placeholders(model: nn.Module, batch, exc: BaseException) -> list[dict]:
    """``batch`` with as many placeholder tokens in ``input_ids`` as the model said its tower emits (or ``[]``).

    The count comes from the model's own refusal (the tower ran, so its output length is known); the token id from
    the config's ``image_token_id`` / ``video_token_id`` / ``audio_token_id`` (or ``*_token_index``). Some models
    report the features' element count rather than their number (a flattened ``(features, width)`` tensor), so
    that count divided by the text width is offered first when it divides.
    """
    match = _PLACEHOLDER_MISMATCH.search(str(exc))
    ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
    if match is None or not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        return []
    kind, total = match.group(1).lower(), int(match.group(2))
    config = getattr(model, "config", None)
    token = _find(config, f"{kind}_token_id", f"{kind}_token_index") if config is not None else None
    if token is None or total == 0:
        return []
    try:
        width = model.get_input_embeddings().weight.shape[-1]
    except (AttributeError, NotImplementedError, TypeError):
        width = None
    counts = ([total // width] if width and total % width == 0 and total > width else []) + [total]
    rows, out = ids.shape[0], []
    for count in counts:
        if count % rows:
            continue
        per_row = count // rows
        new_ids = torch.ones(rows, per_row + ids.shape[1], dtype=ids.dtype, device=ids.device)
        new_ids[:, 1:1 + per_row] = token
        fixed = dict(batch, input_ids=new_ids)
        for name in ("attention_mask", "token_type_ids"):
            if isinstance(batch.get(name), torch.Tensor) and batch[name].shape == ids.shape:
                fixed[name] = torch.ones_like(new_ids) if name == "attention_mask" else torch.zeros_like(new_ids)
        if "mm_token_type_ids" in _params(model.forward):  # multimodal RoPE: 0 text, 1 image, 2 video, per token
            fixed["mm_token_type_ids"] = (new_ids == token).long() * (2 if kind == "video" else 1)
        out.append(fixed)
    return out


def single_example(batch) -> dict | None:
    """``batch`` with every tensor of batch size ``_BATCH`` cut to its first example; ``None`` if none is."""
    if not isinstance(batch, Mapping):
        return None
    cut = {k: v[:1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == _BATCH else v
           for k, v in batch.items()}
    return cut if any(cut[k] is not batch[k] for k in batch) else None


def describe_inputs(inputs) -> str:
    """The batch as a person reads it: ``input_ids [2, 8], pixel_values [2, 3, 224, 224]``."""
    shapes = input_shapes(inputs)
    if isinstance(inputs, Mapping):
        flags = [f"{k}={v!r}" for k, v in inputs.items()
                 if not isinstance(v, torch.Tensor) and isinstance(v, (bool, int, str))]
    else:
        flags = []
    return ", ".join([f"{k} {v}" for k, v in shapes.items()] + flags) or "no tensors"


def dummy_inputs(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | tuple:
    """The first (most likely) dummy batch for ``model`` — see :func:`candidate_inputs`.

    Text models get ``input_ids`` (and ``decoder_input_ids`` for encoder-decoders), vision models
    ``pixel_values`` at the config's image size, audio, time-series and video models their own inputs.
    Plain ``nn.Module`` s get one tensor shaped for their first layer.
    """
    return next(iter(candidate_inputs(model, device)))


def dummy_inputs_apply(model: nn.Module) -> bool:
    """Whether a dummy batch can fit ``model`` at all: a model with a config (its inputs are built from it), or a
    plain module whose forward requires at most the one tensor guessed from its first layer. A wrapper whose forward
    requires more (``forward(features, condition)``) can take none."""
    if getattr(model, "config", None) is not None:
        return True
    return len(_required(model.forward)) <= 1


def _plain_inputs(model: nn.Module, device) -> tuple:
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    first = _first_param_module(model)
    if isinstance(first, nn.modules.conv._ConvNd):
        spatial = (32,) * (first.weight.dim() - 2)
        return (torch.zeros(_BATCH, first.in_channels, *spatial, device=device, dtype=dtype),)
    if isinstance(first, nn.Linear):
        return (torch.zeros(_BATCH, first.in_features, device=device, dtype=dtype),)
    if isinstance(first, nn.Embedding):
        return (torch.zeros(_BATCH, _SEQ, dtype=torch.long, device=device),)
    shape = getattr(first, "normalized_shape", None)  # LayerNorm / RMSNorm first
    if shape is not None:
        return (torch.zeros(_BATCH, *shape, device=device, dtype=dtype),)
    raise GammaAnalysisError(
        f"cannot guess inputs for {type(model).__name__} (no HF config, first layer "
        f"{type(first).__name__ if first is not None else 'none'}); pass `inputs=` to classify_gammas"
    )
