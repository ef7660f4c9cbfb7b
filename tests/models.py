"""Tiny models for the tests: HF configs at hidden 32 / 2 layers, and a hand-written ResNet."""

from __future__ import annotations

import torch
from torch import nn


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=64)
    )


def tiny_gpt2(**overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    kwargs = {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 0}
    kwargs.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**kwargs))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=40, vocab_size=64)
    )


def tiny_marian(**overrides):
    from transformers import MarianConfig, MarianMTModel

    kwargs = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                  encoder_ffn_dim=40, decoder_ffn_dim=40, vocab_size=64, pad_token_id=1, decoder_start_token_id=1,
                  eos_token_id=2, bos_token_id=0, max_position_embeddings=64)
    kwargs.update(overrides)
    return MarianMTModel(MarianConfig(**kwargs))


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(
        T5Config(d_model=32, d_ff=40, num_layers=2, num_heads=2, d_kv=8, vocab_size=64, decoder_start_token_id=0)
    )


def tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(
        ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8, num_labels=3)
    )


def tiny_hf_resnet(layer_type: str):
    from transformers import ResNetConfig, ResNetForImageClassification

    if layer_type == "basic":  # embedding_size == hidden_sizes[0]: stage 0 keeps an identity shortcut
        cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=3)
    else:  # bottleneck: stage 0 widens 16 -> 32 channels, so its first block has a projection shortcut
        cfg = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck",
                           num_labels=3)
    return ResNetForImageClassification(cfg)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv-bn-relu-conv-bn, plus identity or a conv-bn downsample."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """torchvision ResNet-18 layout at two stages of one block each (no torchvision import)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Conditioned(nn.Module):
    """A user model with its own signature, ``forward(features, condition, labels)``: no dummy batch can guess it.

    The condition is fused after the stem (``stem_norm(stem(x)) + cond(c)``: two inputs summed, no residual
    stream), then one pre-LN residual block and a final norm before the head.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 16)
        self.stem_norm = nn.LayerNorm(16)
        self.cond = nn.Linear(3, 16)
        self.block_norm = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 16)
        self.final_norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 2)

    def forward(self, features, condition, labels=None):
        h = self.stem_norm(self.stem(features)) + self.cond(condition)
        h = h + self.fc2(torch.relu(self.fc1(self.block_norm(h))))
        logits = self.head(self.final_norm(h))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def tiny_llava():
    """CLIP vision tower (one layer) + Llama (one layer); 4 image tokens per 16×16 image (2×2 patches of 8)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=16)
    text = LlamaConfig(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=40)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=39,
                                                     vision_feature_layer=-1, projector_hidden_act="gelu"))


def tiny_blip2():
    """BLIP-2: vision (one layer) → Q-Former (one layer, 4 query tokens) → OPT (one layer);
    4 image tokens in the text."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )

    vision = Blip2VisionConfig(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                               image_size=16, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                                 encoder_hidden_size=16, cross_attention_frequency=1, vocab_size=40)
    text = OPTConfig(hidden_size=16, ffn_dim=20, num_hidden_layers=1, num_attention_heads=2, vocab_size=40,
                     word_embed_proj_dim=16, max_position_embeddings=64)
    return Blip2ForConditionalGeneration(Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                                                     text_config=text.to_dict(), num_query_tokens=4,
                                                     image_token_index=39))


def tiny_qwen2_audio():
    """Qwen2-Audio: Whisper-style encoder (one layer, 8 mel bins) → projector → Qwen2 (one layer);
    32 frames → 8 audio tokens."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration, Qwen2Config

    audio = Qwen2AudioEncoderConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=20,
                                    num_mel_bins=8, max_source_positions=16)
    text = Qwen2Config(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=40)
    return Qwen2AudioForConditionalGeneration(Qwen2AudioConfig(audio_config=audio.to_dict(), text_config=text.to_dict(),
                                                               audio_token_index=39))


def tiny_lxmert():
    """LXMERT for VQA: one language, one vision (`r`) and one cross-modality (`x`) layer; 12-d region features."""
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    return LxmertForQuestionAnswering(LxmertConfig(
        vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=20, l_layers=1, x_layers=1, r_layers=1,
        visual_feat_dim=12, visual_pos_dim=4, num_qa_labels=3, max_position_embeddings=32))


def tiny_code_predictor():
    """Qwen3-Omni's talker code predictor: a Qwen3 decoder trained on `inputs_embeds` (it refuses `input_ids`)."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTalkerCodePredictorConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration,
    )

    return Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration(Qwen3OmniMoeTalkerCodePredictorConfig(
        hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, vocab_size=40, num_code_groups=4))


def decayed_under(model: nn.Module, report, policy: str = "guidelines", **patterns) -> set[str]:
    """The γ ``policy`` decays (``patterns``: include/exclude), decided as every caller decides: `decide` with
    `transformers.Trainer`'s rule read from ``model``."""
    from hf_gammareg.config import GammaRegConfig
    from hf_gammareg.decision import decide
    from hf_gammareg.hf_rule import hf_default_decay_names

    return decide(report, GammaRegConfig(policy=policy, **patterns), hf_default_decay_names(model)).decayed
