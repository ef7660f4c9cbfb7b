"""Architectures beyond the reference set: the roles of every γ, written out by hand from docs/design.md.

Each case builds a tiny config and classifies it without inputs (dummy inputs by modality), most of them on
``meta``. The expectations are derived by hand from the rules — never recomputed with the code under test:

* BiT (pre-activation bottlenecks, weight-standardized convs): the first block of a stage sends ``norm1``'s
  output into the 1×1 downsample conv (the shortcut, 1 matrix op) and into conv1 → norm2 (renormalized), so it
  meets the deep branch on the stream side → ``stream``; in later blocks the shortcut is the raw stream and
  ``norm1`` only feeds conv1 → norm2 → ``invariant``; ``norm2`` → conv2 → norm3 → ``invariant``; ``norm3`` →
  conv3 → the residual add → ``branch``; the final ``norm`` is the output → ``head``. The weight-standardized
  convs compute their kernel with ``batch_norm`` of the weight: still a parametrized matrix op.
* MobileBERT's ``NoNorm`` computes ``x·w + b`` — no statistic, no division — so it is not a normalization and
  the model has no γ at all.
* I-BERT's ``IntLayerNorm`` (a child module for quantization, mean/variance computed by hand) is a norm; I-BERT
  is BERT-shaped and post-LN, so the roles are BERT's: ``stream`` except the last ``output.LayerNorm`` → ``head``.
* Reformer's block norms run inside a reversible autograd Function with gradients off: no role can be read, so
  they are reported as ``untracked`` with a warning that names them; the final ``encoder.layer_norm`` → ``head``.
* Mixtral / Qwen2-MoE (pre-RMSNorm, experts): block norms → ``branch``, ``model.norm`` → ``head``, classified
  on a model built on ``meta`` (the experts run through the batched-matmul path there).
* Whisper (pre-LN encoder-decoder, spectrogram input): block norms → ``branch``; the encoder's final
  ``layer_norm`` feeds the decoder's cross-attention values → ``branch``; the decoder's final norm → ``head``.
* wav2vec2 (post-LN, raw waveform input): the feature extractor's GroupNorm is renormalized by the feature
  projection's LayerNorm → ``invariant``; the feature projection norm meets the convolutional position
  embedding (conv + GELU) on the stream side, and each post-LN norm meets the next branch on the stream side
  → ``stream``; the last layer's ``final_layer_norm`` → ``head``.
* CLIP (both towers pre-LN): ``pre_layrnorm`` is the vision stream itself → ``stream``; block norms →
  ``branch``; each tower's final norm → ``head``. Dummy images at the vision sub-config's size (48 here).
* ConvNeXt: the stem's and each downsampling LayerNorm sit on the stream → ``stream``; the block's LayerNorm
  and its ``layer_scale_parameter`` (γ ⊙ F(x) added to x) scale the branch → ``branch``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from models import decayed_under

from hf_gammareg import GammaReport, classify_gammas
from hf_gammareg.analysis import dummy_inputs


def roles(report: GammaReport) -> dict[str, str]:
    return {name: report.role_of(name) for name in report.gammas}


def test_bit_weight_standardized_convs_count_and_first_norm1_of_a_stage_is_stream():
    from transformers import BitConfig, BitModel

    with torch.device("meta"):
        model = BitModel(BitConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1], layer_type="preactivation",
                                   num_groups=2))
    report = classify_gammas(model)
    s0, s1 = "encoder.stages.0.layers", "encoder.stages.1.layers"
    assert roles(report) == {
        f"{s0}.0.norm1.weight": "stream", f"{s0}.0.norm2.weight": "invariant", f"{s0}.0.norm3.weight": "branch",
        f"{s0}.1.norm1.weight": "invariant", f"{s0}.1.norm2.weight": "invariant", f"{s0}.1.norm3.weight": "branch",
        f"{s1}.0.norm1.weight": "stream", f"{s1}.0.norm2.weight": "invariant", f"{s1}.0.norm3.weight": "branch",
        "norm.weight": "head",
    }
    assert report.device == "meta"


def test_mobilebert_nonorm_is_not_a_normalization():
    from transformers import MobileBertConfig, MobileBertModel

    model = MobileBertModel(MobileBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=37, vocab_size=64, embedding_size=16,
                                             intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=1))
    assert model.config.normalization_type == "no_norm"
    with pytest.warns(UserWarning, match="no normalization scale parameters"):
        report = classify_gammas(model)
    assert report.gammas == []
    assert decayed_under(model, report, "all") == set()


def test_ibert_intlayernorm_with_a_child_module_is_found():
    from transformers import IBertConfig, IBertModel

    model = IBertModel(IBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                   vocab_size=64))
    report = classify_gammas(model)
    assert roles(report) == {
        "embeddings.LayerNorm.weight": "stream",
        "encoder.layer.0.attention.output.LayerNorm.weight": "stream",
        "encoder.layer.0.output.LayerNorm.weight": "stream",
        "encoder.layer.1.attention.output.LayerNorm.weight": "stream",
        "encoder.layer.1.output.LayerNorm.weight": "head",
    }
    assert set(report.norm_types.values()) == {"IntLayerNorm"}


def test_reformer_norms_outside_autograd_are_named_in_a_warning():
    from transformers import ReformerConfig, ReformerModel

    model = ReformerModel(ReformerConfig(hidden_size=32, num_attention_heads=2, attention_head_size=16,
                                         feed_forward_size=37, vocab_size=64, attn_layers=["local", "local"],
                                         axial_pos_embds=False, local_attn_chunk_length=4, is_decoder=False))
    inside = [f"encoder.layers.{i}.{part}.layer_norm.weight" for i in (0, 1) for part in ("attention", "feed_forward")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = classify_gammas(model)
    assert roles(report) == {"encoder.layer_norm.weight": "head", **{name: "untracked" for name in inside}}
    assert report.unused == []
    message = " ".join(str(w.message) for w in caught)
    assert all(name in message for name in inside[:3]) and "autograd" in message
    assert all("autograd" in report.reasons[name] for name in inside)
    # No role, so the policies treat them as HF does (LayerNorm: not decayed) unless a regex names them.
    assert decayed_under(model, report) == set()
    assert decayed_under(model, report, include=["feed_forward"]) == {inside[1], inside[3]}


def _moe_roles(prefix: str = "model") -> dict[str, str]:
    out = {f"{prefix}.layers.{i}.{n}.weight": "branch"
           for i in (0, 1) for n in ("input_layernorm", "post_attention_layernorm")}
    return {**out, f"{prefix}.norm.weight": "head"}


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_mixture_of_experts_classifies_on_meta(family):
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=40, vocab_size=64, num_experts_per_tok=2)
    with torch.device("meta"):
        if family == "mixtral":
            model = MixtralForCausalLM(MixtralConfig(num_local_experts=4, **common))
        else:
            model = Qwen2MoeForCausalLM(Qwen2MoeConfig(num_experts=4, moe_intermediate_size=20,
                                                       shared_expert_intermediate_size=40, **common))
    implementation = model.config._experts_implementation
    report = classify_gammas(model)
    assert report.device == "meta"
    assert roles(report) == _moe_roles()
    assert model.config._experts_implementation == implementation  # the switch to batched_mm is undone


def test_whisper_without_inputs():
    from transformers import WhisperConfig, WhisperModel

    model = WhisperModel(WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                       decoder_attention_heads=2, encoder_ffn_dim=40, decoder_ffn_dim=40, vocab_size=64,
                                       num_mel_bins=16, max_source_positions=30, max_target_positions=20,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))
    batch = dummy_inputs(model)
    assert tuple(batch["input_features"].shape) == (2, 16, 60)  # (batch, mel bins, 2 × max_source_positions)
    report = classify_gammas(model)
    assert roles(report) == {
        "encoder.layers.0.self_attn_layer_norm.weight": "branch", "encoder.layers.0.final_layer_norm.weight": "branch",
        "encoder.layer_norm.weight": "branch",
        "decoder.layers.0.self_attn_layer_norm.weight": "branch",
        "decoder.layers.0.encoder_attn_layer_norm.weight": "branch",
        "decoder.layers.0.final_layer_norm.weight": "branch", "decoder.layer_norm.weight": "head",
    }


def test_wav2vec2_without_inputs():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=37, conv_dim=(16, 16), conv_stride=(5, 2),
                                         conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2))
    assert dummy_inputs(model)["input_values"].dim() == 2  # a raw waveform, (batch, samples)
    report = classify_gammas(model)
    assert roles(report) == {
        "feature_extractor.conv_layers.0.layer_norm.weight": "invariant",
        "feature_projection.layer_norm.weight": "stream",
        "encoder.layer_norm.weight": "stream",
        "encoder.layers.0.layer_norm.weight": "stream", "encoder.layers.0.final_layer_norm.weight": "stream",
        "encoder.layers.1.layer_norm.weight": "stream", "encoder.layers.1.final_layer_norm.weight": "head",
    }


def test_clip_images_at_the_vision_sub_config_size():
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=64),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           image_size=48, patch_size=16),
        projection_dim=16)
    model = CLIPModel(config)
    assert not hasattr(config, "image_size") or config.image_size != 48
    batch = dummy_inputs(model)
    assert tuple(batch["pixel_values"].shape) == (2, 3, 48, 48) and "input_ids" in batch
    report = classify_gammas(model)
    assert roles(report) == {
        "text_model.encoder.layers.0.layer_norm1.weight": "branch",
        "text_model.encoder.layers.0.layer_norm2.weight": "branch",
        "text_model.final_layer_norm.weight": "head",
        "vision_model.pre_layrnorm.weight": "stream",
        "vision_model.encoder.layers.0.layer_norm1.weight": "branch",
        "vision_model.encoder.layers.0.layer_norm2.weight": "branch",
        "vision_model.post_layernorm.weight": "head",
    }


def test_sub_config_built_anew_on_every_access_does_not_hang_the_input_builder():
    # WavTokenizer's config exposes `encoder_config` as a property that builds a new config each time, so a
    # walk over sub-configs that stops only at objects it has seen never ends. Inputs still come out.
    from transformers import PretrainedConfig

    class EndlessConfig(PretrainedConfig):
        model_type = "endless-test"

        @property
        def encoder_config(self):
            return EndlessConfig(image_size=40)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = EndlessConfig(image_size=40)
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.norm = torch.nn.BatchNorm2d(4)

        def forward(self, pixel_values):
            return self.norm(self.conv(pixel_values)).mean()

    batch = dummy_inputs(Tiny())
    assert tuple(batch["pixel_values"].shape[-2:]) == (40, 40)


def test_convnext_layer_scale_parameters_are_branch_gammas():
    from transformers import ConvNextConfig, ConvNextModel

    model = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                         layer_scale_init_value=1e-6))
    report = classify_gammas(model)
    s0, s1 = "encoder.stages.0", "encoder.stages.1"
    assert roles(report) == {
        "embeddings.layernorm.weight": "stream",
        f"{s0}.layers.0.layernorm.weight": "branch", f"{s0}.layers.0.layer_scale_parameter": "branch",
        f"{s1}.downsampling_layer.0.weight": "stream",
        f"{s1}.layers.0.layernorm.weight": "branch", f"{s1}.layers.0.layer_scale_parameter": "branch",
        # the final norm only normalizes the pooled output, which the base model's first output does not hold:
        # it runs but takes no part in that output — listed as unused, not left out of the report
        "layernorm.weight": "unused",
    }
    assert report.norm_types[f"{s0}.layers.0.layer_scale_parameter"] == "layer scale (ConvNextLayer)"
    # Policies treat them by role: guidelines decays them (branch), none spares them, hf-default decays them
    # because Trainer's name rule does not recognise them as norms.
    scales = {f"{s0}.layers.0.layer_scale_parameter", f"{s1}.layers.0.layer_scale_parameter"}
    assert scales <= decayed_under(model, report)
    assert scales.isdisjoint(decayed_under(model, report, "none"))
    assert scales <= decayed_under(model, report, "hf-default")


def test_layer_scale_needs_the_residual_shape():
    """A per-channel parameter that multiplies a signal without feeding a residual add is not a layer scale."""

    class Gate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)
            self.proj = torch.nn.Linear(8, 8)
            self.gain = torch.nn.Parameter(torch.ones(8))  # x ⊙ g fed to a linear: not at the end of a branch
            self.scale = torch.nn.Parameter(torch.ones(8))  # x + s ⊙ F(x): a layer scale

        def forward(self, x):
            h = self.proj(self.norm(x) * self.gain)
            return x + self.scale * torch.relu(self.proj(h))

    report = classify_gammas(Gate(), torch.zeros(2, 8))
    assert roles(report) == {"norm.weight": "branch", "scale": "branch"}


def test_a_sub_model_fed_hidden_states_gets_a_sequence_of_its_width():
    # FLAVA's multimodal encoder takes the two towers' projected outputs: its main input is `hidden_states`.
    # A pre-LN ViT-style block stack: block norms on the branch, the final layernorm before the pooler/output.
    from transformers.models.flava import FlavaMultimodalConfig, FlavaMultimodalModel

    config = FlavaMultimodalConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    with torch.device("meta"):
        model = FlavaMultimodalModel(config)
    assert model.main_input_name == "hidden_states"
    assert tuple(dummy_inputs(model, device="meta")["hidden_states"].shape)[-1] == 32
    assert roles(classify_gammas(model)) == {
        "encoder.layer.0.layernorm_before.weight": "branch",
        "encoder.layer.0.layernorm_after.weight": "branch",
        "encoder.layer.1.layernorm_before.weight": "branch",
        "encoder.layer.1.layernorm_after.weight": "branch",
        "layernorm.weight": "head",
    }


def test_a_long_forecasting_context_is_cut_for_the_dummy_series():
    # TimesFM 2.5 loops in Python over each 32-step patch of its 16,384-step context: the dummy series is cut
    # to 512 steps first (the full context stays as a later candidate), and the model still classifies.
    from transformers import TimesFm2_5Config, TimesFm2_5Model

    config = TimesFm2_5Config(num_hidden_layers=1)  # the default width (1280) costs nothing on meta
    assert config.context_length == 16384
    with torch.device("meta"):
        model = TimesFm2_5Model(config)
    assert tuple(dummy_inputs(model, device="meta")["past_values"].shape)[:2] == (2, 512)
    report = classify_gammas(model)
    assert report.gammas and not report.unused
