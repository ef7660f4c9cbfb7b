"""Role of every γ for tiny models, against docs/design.md § Reference classifications.

The expected tables are written out by hand from docs/design.md (2 layers, hidden 32) — never derived
with the code under test.
"""

import pytest
from models import TinyResNet, tiny_bert, tiny_gpt2, tiny_hf_resnet, tiny_llama, tiny_marian, tiny_t5, tiny_vit

from hf_gammareg import classify_gammas

B, INV, S, H = "branch", "invariant", "stream", "head"

BERT_EXACT = {
    "bert.embeddings.LayerNorm.weight": S,
    "bert.encoder.layer.0.attention.output.LayerNorm.weight": S,
    "bert.encoder.layer.0.output.LayerNorm.weight": S,
    "bert.encoder.layer.1.attention.output.LayerNorm.weight": S,
    "bert.encoder.layer.1.output.LayerNorm.weight": H,
}
BERT_APPROX = {
    "bert.embeddings.LayerNorm.weight": INV,
    "bert.encoder.layer.0.attention.output.LayerNorm.weight": INV,
    "bert.encoder.layer.0.output.LayerNorm.weight": INV,
    "bert.encoder.layer.1.attention.output.LayerNorm.weight": INV,
    "bert.encoder.layer.1.output.LayerNorm.weight": H,
}
MARIAN_EXACT = {
    "model.encoder.layers.0.self_attn_layer_norm.weight": S,
    "model.encoder.layers.0.final_layer_norm.weight": S,
    "model.encoder.layers.1.self_attn_layer_norm.weight": S,
    "model.encoder.layers.1.final_layer_norm.weight": B,  # feeds the decoder's cross-attention values
    "model.decoder.layers.0.self_attn_layer_norm.weight": S,
    "model.decoder.layers.0.encoder_attn_layer_norm.weight": S,
    "model.decoder.layers.0.final_layer_norm.weight": S,
    "model.decoder.layers.1.self_attn_layer_norm.weight": S,
    "model.decoder.layers.1.encoder_attn_layer_norm.weight": S,
    "model.decoder.layers.1.final_layer_norm.weight": H,
}
MARIAN_APPROX = {
    "model.encoder.layers.0.self_attn_layer_norm.weight": INV,
    "model.encoder.layers.0.final_layer_norm.weight": INV,
    "model.encoder.layers.1.self_attn_layer_norm.weight": INV,
    "model.encoder.layers.1.final_layer_norm.weight": B,
    "model.decoder.layers.0.self_attn_layer_norm.weight": INV,
    "model.decoder.layers.0.encoder_attn_layer_norm.weight": INV,
    "model.decoder.layers.0.final_layer_norm.weight": INV,
    "model.decoder.layers.1.self_attn_layer_norm.weight": INV,
    "model.decoder.layers.1.encoder_attn_layer_norm.weight": INV,
    "model.decoder.layers.1.final_layer_norm.weight": H,
}
T5_BOTH = {
    "encoder.block.0.layer.0.layer_norm.weight": B,
    "encoder.block.0.layer.1.layer_norm.weight": B,
    "encoder.block.1.layer.0.layer_norm.weight": B,
    "encoder.block.1.layer.1.layer_norm.weight": B,
    "encoder.final_layer_norm.weight": B,
    "decoder.block.0.layer.0.layer_norm.weight": B,
    "decoder.block.0.layer.1.layer_norm.weight": B,
    "decoder.block.0.layer.2.layer_norm.weight": B,
    "decoder.block.1.layer.0.layer_norm.weight": B,
    "decoder.block.1.layer.1.layer_norm.weight": B,
    "decoder.block.1.layer.2.layer_norm.weight": B,
    "decoder.final_layer_norm.weight": H,
}
GPT2_BOTH = {
    "transformer.h.0.ln_1.weight": B,
    "transformer.h.0.ln_2.weight": B,
    "transformer.h.1.ln_1.weight": B,
    "transformer.h.1.ln_2.weight": B,
    "transformer.ln_f.weight": H,
}
LLAMA_BOTH = {
    "model.layers.0.input_layernorm.weight": B,
    "model.layers.0.post_attention_layernorm.weight": B,
    "model.layers.1.input_layernorm.weight": B,
    "model.layers.1.post_attention_layernorm.weight": B,
    "model.norm.weight": H,
}
VIT_BOTH = {
    "vit.layers.0.layernorm_before.weight": B,
    "vit.layers.0.layernorm_after.weight": B,
    "vit.layers.1.layernorm_before.weight": B,
    "vit.layers.1.layernorm_after.weight": B,
    "vit.layernorm.weight": H,
}
RESNET_BASIC_BOTH = {
    "resnet.embedder.embedder.normalization.weight": S,  # stage 0 starts with an identity shortcut
    "resnet.encoder.stages.0.layers.0.layer.0.normalization.weight": INV,
    "resnet.encoder.stages.0.layers.0.layer.1.normalization.weight": B,
    "resnet.encoder.stages.1.layers.0.shortcut.normalization.weight": S,
    "resnet.encoder.stages.1.layers.0.layer.0.normalization.weight": INV,
    "resnet.encoder.stages.1.layers.0.layer.1.normalization.weight": B,
}
RESNET_BOTTLENECK_BOTH = {
    "resnet.embedder.embedder.normalization.weight": INV,  # both paths out of it are renormalized
    "resnet.encoder.stages.0.layers.0.shortcut.normalization.weight": S,
    "resnet.encoder.stages.0.layers.0.layer.0.normalization.weight": INV,
    "resnet.encoder.stages.0.layers.0.layer.1.normalization.weight": INV,
    "resnet.encoder.stages.0.layers.0.layer.2.normalization.weight": B,
    "resnet.encoder.stages.1.layers.0.shortcut.normalization.weight": S,
    "resnet.encoder.stages.1.layers.0.layer.0.normalization.weight": INV,
    "resnet.encoder.stages.1.layers.0.layer.1.normalization.weight": INV,
    "resnet.encoder.stages.1.layers.0.layer.2.normalization.weight": B,
}
TORCHVISION_RESNET_BOTH = {
    "bn1.weight": S,
    "layer1.0.bn1.weight": INV,
    "layer1.0.bn2.weight": B,
    "layer2.0.bn1.weight": INV,
    "layer2.0.bn2.weight": B,
    "layer2.0.downsample.1.weight": S,
}

CASES = [
    ("bert", tiny_bert, "exact", BERT_EXACT),
    ("bert", tiny_bert, "approximate", BERT_APPROX),
    ("marian", tiny_marian, "exact", MARIAN_EXACT),
    ("marian", tiny_marian, "approximate", MARIAN_APPROX),
    ("t5", tiny_t5, "exact", T5_BOTH),
    ("t5", tiny_t5, "approximate", T5_BOTH),
    ("gpt2", tiny_gpt2, "exact", GPT2_BOTH),
    ("gpt2", tiny_gpt2, "approximate", GPT2_BOTH),
    ("llama", tiny_llama, "exact", LLAMA_BOTH),
    ("llama", tiny_llama, "approximate", LLAMA_BOTH),
    ("vit", tiny_vit, "exact", VIT_BOTH),
    ("vit", tiny_vit, "approximate", VIT_BOTH),
    ("resnet-basic", lambda: tiny_hf_resnet("basic"), "exact", RESNET_BASIC_BOTH),
    ("resnet-basic", lambda: tiny_hf_resnet("basic"), "approximate", RESNET_BASIC_BOTH),
    ("resnet-bottleneck", lambda: tiny_hf_resnet("bottleneck"), "exact", RESNET_BOTTLENECK_BOTH),
    ("resnet-bottleneck", lambda: tiny_hf_resnet("bottleneck"), "approximate", RESNET_BOTTLENECK_BOTH),
    ("torchvision-resnet", TinyResNet, "exact", TORCHVISION_RESNET_BOTH),
    ("torchvision-resnet", TinyResNet, "approximate", TORCHVISION_RESNET_BOTH),
]


@pytest.mark.parametrize("name,build,invariance,expected", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_reference_roles(name, build, invariance, expected):
    report = classify_gammas(build(), invariance=invariance)
    assert report.roles == expected
    assert report.unused == []
    assert report.device == "meta"
    assert set(report.reasons) == set(expected) and all(report.reasons.values())


def test_reasons_name_the_residual_add():
    report = classify_gammas(tiny_gpt2())
    assert report.reasons["transformer.h.1.ln_2.weight"] == (
        "meets residual add in `transformer.h.1` on the branch side; the other operand is the stream it started from"
    )
    assert "reaches the output (`logits`)" in report.reasons["transformer.ln_f.weight"]


def test_marian_with_relu_ffn_makes_attention_norms_invariant_in_exact_mode():
    # fairseq's transformer_iwslt_de_en uses ReLU. x + W2·relu(W1·x) is positively homogeneous in x,
    # so the norm before the FFN sees only renormalization: `invariant`, even in `exact` mode.
    report = classify_gammas(tiny_marian(activation_function="relu"))
    assert report.roles["model.encoder.layers.0.self_attn_layer_norm.weight"] == INV
    assert report.roles["model.decoder.layers.0.encoder_attn_layer_norm.weight"] == INV
    # the norm before self-attention still meets a softmax branch
    assert report.roles["model.encoder.layers.0.final_layer_norm.weight"] == S
    assert report.roles["model.decoder.layers.0.self_attn_layer_norm.weight"] == S
