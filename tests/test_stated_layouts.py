"""Dummy batches whose sizes a config field states (tried after every other batch), and inputs built only where a
forward requires them. Each model is a small config built on ``meta`` that no earlier batch runs.

Role tables written by hand from docs/design.md (../shared/DESIGN.md):

* Voxtral Realtime (a Whisper-style audio tower, pre-norm, whose projected output is added position by position
  to the text embeddings; a Mistral text model): the audio tower's block norms and the text model's block norms
  start their branch and meet the stream it started from → ``branch``; the audio tower's final ``norm`` reaches,
  through the projector, an addition with the text embeddings, which share no computed ancestor with it: a fusion
  of independent inputs → ``stream``; the text model's ``norm`` is the output → ``head``.
* Inkling 2's vision model (pre-LN ViT with layer scales and a ``pre_layernorm`` before the first block): the
  ``pre_layernorm`` output is the residual stream the first block's branch grows from → ``stream``; each block's
  norms and layer scales ``lambda_1`` / ``lambda_2`` sit on its branches → ``branch``.
* DeepSeek-OCR 2's vision encoder (a Qwen2-style pre-RMSNorm decoder over image and query tokens): block norms →
  ``branch``; ``norm`` → ``head``.
* BLT's local decoder (pre-norm blocks; a cross-attention to the global model's patch embeddings before the first
  block, with RMS-normed queries and keys): block norms → ``branch``; the cross-attention's ``q_norm`` and
  ``k_norm`` sit inside its branch (keys reach the add through the softmax only, still on the branch side) →
  ``branch``; ``norm`` → ``head``.
* Inkling's audio model (codebook embeddings summed, then one RMSNorm): ``norm`` is the output → ``head``.
* RAG's BART generator (post-LN, GELU; the reference reading of Marian): every encoder and decoder norm, the
  embedding norms included, meets the next branch on the stream side → ``stream``, except the encoder's last
  ``final_layer_norm`` (it feeds the decoder's cross-attention values → ``branch``) and the decoder's last
  ``final_layer_norm`` (the output → ``head``). Without a retriever the question encoder never runs: its norms
  get no role.
"""

from __future__ import annotations

import warnings

import torch
import transformers as tf

from hf_gammareg import GammaReport, classify_gammas

PRE_NORMS = ("input_layernorm", "post_attention_layernorm")  # a Llama-style block's two pre-branch norms


def roles(report: GammaReport) -> dict[str, str]:
    return {name: report.role_of(name) for name in report.gammas}


def on_meta(cls, config):
    with torch.device("meta"):
        return cls(config)


def classify(model) -> GammaReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classify_gammas(model)


def test_mel_frames_per_text_token_come_from_the_config():
    config = tf.VoxtralRealtimeConfig(
        audio_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          num_mel_bins=16, head_dim=8, max_position_embeddings=64, sliding_window=32),
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, vocab_size=32, sliding_window=64),
        downsample_factor=2, audio_length_per_tok=4)
    report = classify(on_meta(tf.VoxtralRealtimeModel, config))
    # 8 text tokens, 4 mel frames each (the conv stem halves them, the projector stacks 2)
    assert report.inputs_shapes["input_features"] == [2, 16, 32]
    audio = {f"audio_tower.layers.{i}.{n}.weight": "branch" for i in (0, 1)
             for n in ("self_attn_layer_norm", "final_layer_norm")}
    text = {f"language_model.layers.{i}.{n}.weight": "branch" for i in (0, 1) for n in PRE_NORMS}
    assert roles(report) == {**audio, "audio_tower.norm.weight": "stream", **text,
                             "language_model.norm.weight": "head"}


def test_a_grid_tower_fed_one_tile_per_merged_token():
    from transformers.models.inkling2.configuration_inkling2 import Inkling2VisionConfig
    from transformers.models.inkling2.modeling_inkling2 import Inkling2VisionModel

    config = Inkling2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  patch_size=4, spatial_merge_size=2, posemb_grid_size=4, projection_hidden_dim=32,
                                  text_hidden_size=48)
    report = classify(on_meta(Inkling2VisionModel, config))
    # (tokens, p·m, p·m, C) and the grid counted in merged tokens
    assert report.inputs_shapes == {"pixel_values": [4, 8, 8, 3], "image_grid_thw": [1, 3]}
    blocks = {f"layers.{i}.{n}": "branch" for i in (0, 1)
              for n in ("lambda_1", "lambda_2", "layernorm_before.weight", "layernorm_after.weight")}
    assert roles(report) == {"pre_layernorm.weight": "stream", **blocks}


def test_a_required_patch_count_is_built():
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import DeepseekOcr2VisionEncoderConfig
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2VisionEncoder

    config = DeepseekOcr2VisionEncoderConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, vocab_size=32)
    report = classify(on_meta(DeepseekOcr2VisionEncoder, config))
    blocks = {f"layers.{i}.{n}.weight": "branch" for i in (0, 1) for n in PRE_NORMS}
    assert roles(report) == {**blocks, "norm.weight": "head"}


def _blt_local(cls_name: str):
    from transformers.models.blt import configuration_blt, modeling_blt

    config = getattr(configuration_blt, f"{cls_name}Config")(
        vocab_size=32, hidden_size=16, hidden_size_global=24, num_attention_heads=2, num_key_value_heads=2,
        num_hidden_layers=2, intermediate_size=32, cross_attn_k=2)
    return on_meta(getattr(modeling_blt, cls_name), config)


def test_features_of_another_module_at_the_width_the_config_states():
    report = classify(_blt_local("BltLocalDecoder"))
    assert report.inputs_shapes["patch_embeds"] == [2, 8, 24]  # hidden_size_global, the global model's width
    blocks = {f"layers.{i}.{n}.weight": "branch" for i in (0, 1) for n in PRE_NORMS}
    cross = {f"cross_attn_layers.{i}.{n}.weight": "branch" for i in (0, 1) for n in ("q_norm", "k_norm")}
    assert roles(report) == {**blocks, "norm.weight": "head", **cross}


def test_a_decoder_context_of_the_width_the_config_states():
    from transformers.models.moshi.modeling_moshi import MoshiDepthDecoder

    config = tf.MoshiDepthConfig(vocab_size=32, hidden_size=16, input_size=24, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, audio_vocab_size=16, num_codebooks=8,
                                 ffn_dim=32, max_position_embeddings=8, head_dim=8, sliding_window=8)
    report = classify(on_meta(MoshiDepthDecoder, config))
    assert report.inputs_shapes["last_hidden_state"] == [2, 8, 24]  # input_size: the main decoder's width
    assert set(roles(report).values()) == {"branch"} and len(report.gammas) == 4


def test_byte_patches_from_the_config_patch_size_and_per_token_patch_ids():
    config = tf.BltConfig(
        vocab_size=32, patch_size=4, encoder_hash_byte_group_vocab=64,
        patcher_config=dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32),
        encoder_config=dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, hidden_size_global=32),
        decoder_config=dict(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, hidden_size_global=32),
        global_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    report = classify(on_meta(tf.BltModel, config))
    assert report.inputs_shapes["patch_lengths"] == [2, 2]  # 8 bytes in patches of patch_size 4
    # Given the patches, the entropy model that would cut them (frozen, run under no_grad) is not called
    assert all(name.startswith("patcher.") for name in report.unused)
    assert report.role_of("local_decoder.norm.weight") == "head"
    encoder = classify(_blt_local("BltLocalEncoder"))
    assert encoder.inputs_shapes["patch_ids"] == [2, 8]
    assert all(encoder.role_of(f"layers.{i}.{n}.weight") == "branch" for i in (0, 1) for n in PRE_NORMS)


def test_codebook_axis_on_another_token_input():
    from transformers.models.inkling.configuration_inkling import InklingAudioConfig
    from transformers.models.inkling.modeling_inkling import InklingAudioModel

    report = classify(on_meta(InklingAudioModel, InklingAudioConfig(n_mel_bins=4, mel_vocab_size=8,
                                                                    text_hidden_size=16)))
    assert report.inputs_shapes == {"audio_input_ids": [2, 8, 4]}  # one id per mel bin (num_codebooks)
    assert roles(report) == {"norm.weight": "head"}


def test_a_cross_attention_context_beside_codebook_ids():
    from transformers.models.dia.modeling_dia import DiaDecoder

    config = tf.DiaDecoderConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                 num_key_value_heads=1, head_dim=8, cross_num_attention_heads=2, cross_head_dim=8,
                                 cross_num_key_value_heads=2, cross_hidden_size=24, vocab_size=40, num_channels=3,
                                 pad_token_id=39, eos_token_id=38, bos_token_id=37)
    report = classify(on_meta(DiaDecoder, config))
    assert report.inputs_shapes == {"input_ids": [2, 8, 3], "encoder_hidden_states": [2, 8, 24]}
    assert report.role_of("norm.weight") == "head" and not report.unused


def test_waveform_length_a_multiple_of_the_encoder_stride():
    from transformers.models.muse_spark.configuration_muse_spark import MuseSparkAudioConfig
    from transformers.models.muse_spark.modeling_muse_spark import MuseSparkAudioModel

    config = MuseSparkAudioConfig(patch_sizes=[6, 5], hidden_sizes=[16, 32], depths=[1, 1], num_hidden_layers=2,
                                  out_hidden_size=24)
    report = classify(on_meta(MuseSparkAudioModel, config))
    shape = report.inputs_shapes["input_values"]
    assert len(shape) == 2 and shape[1] % config.samples_per_token == 0
    assert report.role_of("post_proj_norm.weight") == "head" and not report.unused


def test_an_image_prompt_painted_above_the_image():
    config = tf.SegGptConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=[64, 32],
                             patch_size=16, pretrain_image_size=32, mlp_dim=64, merge_index=0,
                             intermediate_hidden_state_indices=[1], decoder_hidden_size=16)
    report = classify(on_meta(tf.SegGptModel, config))
    half = [2, 3, 32, 32]  # each of the three stacked along the height of the (64, 32) canvas
    assert report.inputs_shapes == {"pixel_values": half, "prompt_pixel_values": half, "prompt_masks": half}
    assert all(report.role_of(f"encoder.layers.{i}.{n}.weight") == "branch" for i in (0, 1)
               for n in ("layernorm_before", "layernorm_after"))


def test_an_image_whose_patch_grid_the_windows_divide():
    config = tf.RfDetrConfig(
        backbone_config=dict(model_type="rf_detr_dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             image_size=36, patch_size=4, num_windows=2, out_indices=[1, 2], window_block_indexes=[0]),
        d_model=32, decoder_layers=1, decoder_ffn_dim=32, decoder_self_attention_heads=2,
        decoder_cross_attention_heads=2, num_queries=4, group_detr=1, intermediate_size=32)
    report = classify(on_meta(tf.RfDetrModel, config))
    assert report.inputs_shapes == {"pixel_values": [2, 3, 40, 40]}  # 10 patches a side, 2 windows of 5
    backbone = [n for n in report.gammas if n.startswith("backbone.backbone.encoder.")]
    assert len(backbone) == 8 and all(report.role_of(n) == "branch" for n in backbone)


def test_frames_at_the_size_the_visual_prompter_pads_to():
    config = tf.TvpConfig(
        backbone_config=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                             out_features=["stage2"]),
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_frames=2,
        max_img_size=64, visual_prompt_size=8, max_position_embeddings=32, vocab_size=32)
    report = classify(on_meta(tf.TvpModel, config))
    assert report.inputs_shapes["pixel_values"][-2:] == [64, 64]
    assert report.gammas and not report.unused


def test_an_image_the_forward_calls_hidden_states():
    from transformers.models.florence2.configuration_florence2 import Florence2VisionConfig
    from transformers.models.florence2.modeling_florence2 import Florence2VisionBackbone

    config = Florence2VisionConfig(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                                   patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[2, 4],
                                   num_groups=[2, 4], window_size=2, projection_dim=32)
    report = classify(on_meta(Florence2VisionBackbone, config))
    assert report.inputs_shapes == {"hidden_states": [2, 3, 224, 224]}
    assert report.gammas and not report.unused


def test_samples_behind_each_spectrogram_from_the_hop_length():
    from transformers.models.dots3_note.configuration_dots3_note import Dots3NoteAudioConfig
    from transformers.models.dots3_note.modeling_dots3_note import Dots3NoteAudioModel

    config = Dots3NoteAudioConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, head_dim=8, feature_size=16, downsample_hidden_size=4,
                                  conv_output_size=8, adapter_input_size=16, adapter_out_dim=24, hop_length=10,
                                  samples_per_token=80)
    report = classify(on_meta(Dots3NoteAudioModel, config))
    assert report.inputs_shapes == {"input_features": [2, 16, 400], "chunk_sample_lengths": [2]}
    assert report.role_of("layer_norm.weight") == "head"
    assert all(report.role_of(f"layers.{i}.{n}.weight") == "branch" for i in (0, 1) for n in PRE_NORMS)


def test_retrieved_contexts_and_their_scores_from_n_docs():
    generator = dict(model_type="bart", vocab_size=32, d_model=16, encoder_layers=2, decoder_layers=2,
                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                     max_position_embeddings=32)
    question = dict(model_type="dpr", vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)
    report = classify(on_meta(tf.RagModel, tf.RagConfig(question_encoder=question, generator=generator, n_docs=2)))
    assert report.inputs_shapes["context_input_ids"] == [4, 8] and report.inputs_shapes["doc_scores"] == [2, 2]
    encoder, decoder = "generator.model.encoder", "generator.model.decoder"
    expected = {f"{encoder}.layernorm_embedding.weight": "stream", f"{decoder}.layernorm_embedding.weight": "stream"}
    expected.update({f"{encoder}.layers.{i}.{n}.weight": "stream" for i in (0, 1)
                     for n in ("self_attn_layer_norm", "final_layer_norm")})
    expected.update({f"{decoder}.layers.{i}.{n}.weight": "stream" for i in (0, 1)
                     for n in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")})
    expected[f"{encoder}.layers.1.final_layer_norm.weight"] = "branch"
    expected[f"{decoder}.layers.1.final_layer_norm.weight"] = "head"
    assert {n: r for n, r in roles(report).items() if n.startswith("generator.")} == expected
    assert report.unused and all(n.startswith("question_encoder.") for n in report.unused)
