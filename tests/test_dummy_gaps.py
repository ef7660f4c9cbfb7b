"""Dummy inputs for models a bare config leaves short: the values it leaves unset, the layouts a forward declares
optional yet needs, and the one-line error when nothing runs. Role tables written by hand from docs/design.md:

* DeepSeek-V2 (pre-RMSNorm, MLA attention, a router whose top-k the bare config leaves ``None``): the block norms
  feed their branch and meet the stream the block started from → ``branch``; the attention's ``kv_a_layernorm``
  sits inside the attention branch (→ ``kv_b_proj`` → values → ``o_proj`` → the residual add, the block's input on
  the other side) → ``branch``; ``norm`` → ``head``.
* GLM-4V's text model (sandwich norms; multimodal RoPE whose sections fall back to a checkpoint's [8, 12, 12] when
  ``rope_parameters`` has none): the pre-branch norms are renormalized by the post-branch norms → ``invariant``;
  the post-branch norms end their branch → ``branch``; ``norm`` → ``head``.
* SigLIP 2 (NaFlex patches; ``spatial_shapes`` optional in the dual encoder's signature): each tower's block norms
  → ``branch``; the text tower's ``final_layer_norm`` → ``head``; the vision ``post_layernorm`` feeds the attention
  pooling head, whose MLP (2 matrix ops, the deeper side) meets it at the head's residual add → ``stream``; the
  head's own ``layernorm`` starts that MLP branch → ``branch``.
* Mllama's vision model (tiles with aspect-ratio ids): block norms of both transformers → ``branch``;
  ``layernorm_pre`` is the local transformer's residual stream, ``layernorm_post`` the global one's (the gated
  positional embedding added to it is computed from parameters alone: a bias, not a signal) → ``stream``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hf_gammareg import GammaAnalysisError, GammaReport, classify_gammas
from hf_gammareg.analysis import dummy_inputs


def roles(report: GammaReport) -> dict[str, str]:
    return {name: report.role_of(name) for name in report.gammas}


def _deepseek_v2(device: str):
    from transformers import DeepseekV2Config, DeepseekV2Model

    config = DeepseekV2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                              intermediate_size=40, vocab_size=64, n_routed_experts=4, moe_intermediate_size=20,
                              kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4, qk_nope_head_dim=4,
                              v_head_dim=8, first_k_dense_replace=1)
    assert config.num_experts_per_tok is None  # the bare config's gap: torch.topk(k=None) fails
    with torch.device(device):
        return DeepseekV2Model(config)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_router_top_k_left_unset_is_filled_on_a_copy_only(device):
    model = _deepseek_v2(device)
    before = {n: p.detach().clone() for n, p in model.named_parameters()} if device == "cpu" else {}
    with pytest.warns(UserWarning, match=r"num_experts_per_tok = 1.*the model and its config are unchanged"):
        report = classify_gammas(model)
    block = {f"layers.{i}.{n}.weight": "branch" for i in (0, 1)
             for n in ("self_attn.kv_a_layernorm", "input_layernorm", "post_attention_layernorm")}
    assert roles(report) == {**block, "norm.weight": "head"}
    assert report.device == "meta"
    # The user's config and modules keep their unset values; a real model keeps its weights.
    assert model.config.num_experts_per_tok is None and model.config.pad_token_id is None
    assert model.layers[1].mlp.gate.top_k is None
    for name, value in before.items():
        assert torch.equal(dict(model.named_parameters())[name], value)


def test_multimodal_rope_sections_follow_the_frequencies_of_the_config():
    from transformers import Glm4vTextConfig, Glm4vTextModel

    with torch.device("meta"):
        model = Glm4vTextModel(Glm4vTextConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=40, vocab_size=64))
    with pytest.warns(UserWarning, match="mrope_section"):
        report = classify_gammas(model)
    per_layer = {"input_layernorm": "invariant", "post_self_attn_layernorm": "branch",
                 "post_attention_layernorm": "invariant", "post_mlp_layernorm": "branch"}
    assert roles(report) == {**{f"layers.{i}.{n}.weight": r for i in (0, 1) for n, r in per_layer.items()},
                             "norm.weight": "head"}
    assert "mrope_section" not in model.config.rope_parameters
    assert model.rotary_emb.mrope_section == [8, 12, 12]  # the user's module is untouched


def test_naflex_patches_when_the_signature_leaves_them_optional():
    from transformers import Siglip2Config, Siglip2Model

    config = Siglip2Config(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=64),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           patch_size=4, num_patches=16))
    with torch.device("meta"):
        model = Siglip2Model(config)
    report = classify_gammas(model)
    assert report.inputs_shapes["pixel_values"] == [2, 16, 3 * 4 * 4]  # (batch, patches, C·p·p)
    assert report.inputs_shapes["spatial_shapes"] == [2, 2]
    assert roles(report) == {
        "text_model.encoder.layers.0.layer_norm1.weight": "branch",
        "text_model.encoder.layers.0.layer_norm2.weight": "branch",
        "text_model.final_layer_norm.weight": "head",
        "vision_model.encoder.layers.0.layer_norm1.weight": "branch",
        "vision_model.encoder.layers.0.layer_norm2.weight": "branch",
        "vision_model.post_layernorm.weight": "stream",
        "vision_model.head.layernorm.weight": "branch",
    }


def test_tiled_images_get_aspect_ratio_ids_and_mask_from_the_config():
    from transformers import MllamaVisionConfig, MllamaVisionModel

    with torch.device("meta"):
        model = MllamaVisionModel(MllamaVisionConfig(
            hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2, intermediate_size=40,
            image_size=16, patch_size=8, intermediate_layers_indices=[0], vision_output_dim=64))
    batch = dummy_inputs(model)
    tiles = model.config.max_num_tiles
    assert tuple(batch["pixel_values"].shape) == (2, 1, tiles, 3, 16, 16)
    assert tuple(batch["aspect_ratio_ids"].shape) == (2, 1)
    assert tuple(batch["aspect_ratio_mask"].shape) == (2, 1, tiles)
    report = classify_gammas(model)
    blocks = {f"{stack}.layers.{i}.{n}.weight": "branch" for stack, n_layers in (("transformer", 2),
                                                                                  ("global_transformer", 1))
              for i in range(n_layers) for n in ("input_layernorm", "post_attention_layernorm")}
    assert roles(report) == {"layernorm_pre.weight": "stream", "layernorm_post.weight": "stream", **blocks}


class _TinyConfig:
    """Just enough of a PretrainedConfig for the dummy builder: a vocabulary and no sub-configs."""

    vocab_size = 16
    is_encoder_decoder = False

    def to_dict(self):
        return {"vocab_size": self.vocab_size}


class _NeedsLayout(nn.Module):
    """A model whose forward declares ``layout_ids`` optional yet refuses to run without it."""

    main_input_name = "input_ids"

    def __init__(self):
        super().__init__()
        self.config = _TinyConfig()
        self.embed = nn.Embedding(16, 8)
        self.layout = nn.Embedding(4, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 2)

    def forward(self, input_ids, layout_ids=None, output_attentions=False):
        if layout_ids is None:
            raise ValueError("You have to specify layout_ids")
        return self.out(self.norm(self.embed(input_ids) + self.layout(layout_ids)))


class _NeedsSession(_NeedsLayout):
    def forward(self, inference_session, input_ids=None):  # an object the builder cannot make
        return self.out(self.norm(self.embed(input_ids)))


def test_a_failure_is_one_line_naming_the_input_to_pass():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(GammaAnalysisError) as info:
            classify_gammas(_NeedsLayout())
    text = str(info.value)
    assert "\n" not in text
    assert "You have to specify layout_ids" in text  # the model's own exception
    assert "no dummy batch held: `layout_ids`)" in text  # the input to pass; switches are not named
    assert "output_attentions" not in text


def test_an_input_the_builder_cannot_make_is_named_on_one_line():
    with pytest.raises(GammaAnalysisError, match="cannot build a dummy `inference_session`") as info:
        classify_gammas(_NeedsSession())
    assert "\n" not in str(info.value) and "inputs=" in str(info.value)


# Late batches read from config fields and the signature (written by hand from docs/design.md):
# * Qwen3-Omni's talker code predictor (pre-RMSNorm blocks with per-head q/k norms) refuses `input_ids` and runs on
#   `inputs_embeds` alone: the block norms and the q/k norms inside the attention branch meet the stream the block
#   started from at its residual add → ``branch``; ``norm`` → ``head``.
# * Unlimited OCR's vision encoder (CLIP-style, fed a SAM feature map as patch embeddings, (batch, width, h, w)):
#   ``pre_layrnorm`` is the residual stream's start (the stream side of every block's add) → ``stream``; the block
#   norms → ``branch``.
# * Qwen3-ASR's audio encoder (its windows' lengths looped over in Python and handed to torch.tensor): pre-LN blocks
#   → ``branch``; ``ln_post`` → ``head``.


def test_a_forward_that_refuses_ids_runs_on_embeddings_alone():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTalkerCodePredictorConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeTalkerCodePredictorModel

    config = Qwen3OmniMoeTalkerCodePredictorConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=2, head_dim=8, intermediate_size=40,
                                                   vocab_size=64)
    with torch.device("meta"):
        model = Qwen3OmniMoeTalkerCodePredictorModel(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classify_gammas(model)
    per_layer = ("self_attn.q_norm", "self_attn.k_norm", "input_layernorm", "post_attention_layernorm")
    assert roles(report) == {**{f"layers.{i}.{n}.weight": "branch" for i in (0, 1) for n in per_layer},
                             "norm.weight": "head"}
    assert "input_ids" not in report.inputs_shapes and report.inputs_shapes["inputs_embeds"] == [2, 8, 32]


def test_a_sub_model_fed_a_feature_map_gets_a_channels_first_map():
    from transformers.models.unlimited_ocr.configuration_unlimited_ocr import UnlimitedOcrVisionEncoderConfig
    from transformers.models.unlimited_ocr.modeling_unlimited_ocr import UnlimitedOcrVisionEncoder

    config = UnlimitedOcrVisionEncoderConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=56, patch_size=14)
    with torch.device("meta"):
        model = UnlimitedOcrVisionEncoder(config)
    report = classify_gammas(model)
    assert roles(report) == {"pre_layrnorm.weight": "stream",
                             **{f"encoder.layers.{i}.layer_norm{k}.weight": "branch" for i in (0, 1) for k in (1, 2)}}
    assert report.inputs_shapes["patch_embeds"] == [2, 32, 4, 4]


def test_lengths_looped_over_in_python_keep_their_values_on_meta():
    from transformers.models.qwen3_asr.configuration_qwen3_asr import Qwen3ASREncoderConfig
    from transformers.models.qwen3_asr.modeling_qwen3_asr import Qwen3ASREncoder

    config = Qwen3ASREncoderConfig(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=40,
                                   d_model=32, output_dim=24, downsample_hidden_size=8)
    with torch.device("meta"):
        model = Qwen3ASREncoder(config)
    report = classify_gammas(model)
    assert roles(report) == {**{f"layers.{i}.{n}.weight": "branch" for i in (0, 1)
                                for n in ("self_attn_layer_norm", "final_layer_norm")},
                             "ln_post.weight": "head"}
    # (batch, mel, frames): frames a whole number of the encoder's 2 × n_window windows, a mask over them
    assert report.inputs_shapes["input_features"][:2] == [2, 16]
    assert report.inputs_shapes["input_features"][2] % (2 * config.n_window) == 0
