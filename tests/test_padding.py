"""A padding mask never changes a role: in-place writes into the traced signal are read as graph facts.

Speech encoders zero padded frames in place (``hidden_states[~mask] = 0``) and sdpa writes ``min`` into masked
scores (``torch.where(mask, position_bias, min)``). Each element such a write keeps is the signal's own, so the
result scales with the signal; a constant written in is no signal. The tables are worked out by hand from
docs/design.md (../shared/DESIGN.md), never from this code, and hold with and without a mask that pads one row.
"""

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_gammareg import classify_gammas

B = "branch"
S = "stream"
H = "head"
INV = "invariant"


def _padding_mask(batch: int, length: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length * 3 // 4:] = 0  # the last row padded
    return mask


def _roles(model, **inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classify_gammas(model, inputs=inputs).roles


# --- a user module that zeroes padded positions in place -------------------------------------------------------

def _zero_setitem(h, keep):
    h[~keep] = 0


def _zero_masked_fill(h, keep):
    h.masked_fill_(~keep[..., None], 0.0)


def _zero_index_put(h, keep):
    rows, cols = (~keep).nonzero(as_tuple=True)
    h.index_put_((rows, cols), torch.tensor(0.0))


def _zero_slice(h, keep):  # a write into a view of h: autograd records it as CopySlices, which hides the op
    h[-1, int(keep[-1].sum()):] = 0


def _zero_slice_zero_(h, keep):
    h[-1, int(keep[-1].sum()):].zero_()


def _zero_through_view(h, keep):
    h.view(-1, h.shape[-1])[~keep.reshape(-1)] = 0


def _zero_by_mask_multiply(h, keep):
    h.mul_(keep[..., None].to(h.dtype))


WRITES = {"setitem": _zero_setitem, "masked_fill_": _zero_masked_fill, "index_put_": _zero_index_put,
          "slice": _zero_slice, "slice zero_": _zero_slice_zero_, "through a view": _zero_through_view,
          "mul_ by the mask": _zero_by_mask_multiply}


class ZeroPadded(nn.Module):
    """wav2vec2's encoder entry, shortened: a projected, normalized input whose padded positions are zeroed in
    place, then two post-LN residual blocks ``norm(h + gelu(W·h))`` and a head."""

    def __init__(self, write, d=8):
        super().__init__()
        self.write = write
        self.proj = nn.Linear(4, d)
        self.in_norm = nn.LayerNorm(d)
        self.mix = nn.Linear(d, d)  # the positional convolution's place
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.out_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def forward(self, features, attention_mask=None):
        h = self.in_norm(self.proj(features))
        if attention_mask is not None:
            self.write(h, attention_mask.bool())
        h = self.norm(h + F.gelu(self.mix(h)))
        h = self.out_norm(h + F.gelu(self.fc(h)))
        return self.head(h)


# By hand (exact mode): `in_norm`'s signal meets `h + gelu(W·h)`, an addition whose other operand depends on it only
# through a GELU after one matrix op: a mixing addition, with the scaling operand on the stream side -> stream. The
# same for `norm`. `out_norm` reaches the head unrenormalized -> head. Zeroing padded positions writes a constant into
# elements, which changes none of this.
ZERO_PADDED = {"in_norm.weight": S, "norm.weight": S, "out_norm.weight": H}


@pytest.mark.parametrize("write", list(WRITES), ids=list(WRITES))
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padding mask"])
def test_zeroing_padded_positions_in_place_keeps_every_role(write, masked):
    torch.manual_seed(0)
    model = ZeroPadded(WRITES[write])
    inputs = {"features": torch.randn(2, 6, 4)}
    if masked:
        inputs["attention_mask"] = _padding_mask(2, 6)
    assert _roles(model, **inputs) == ZERO_PADDED


class RealOnly(ZeroPadded):
    """Refuses meta tensors, so the analysis runs it on the real device."""

    def forward(self, features, attention_mask=None):
        if features.is_meta:
            raise RuntimeError("real tensors only")
        return super().forward(features, attention_mask)


@pytest.mark.parametrize("cls", [ZeroPadded, RealOnly], ids=["meta", "cpu"])
def test_a_write_into_a_view_is_read_by_its_op(cls):
    """`h[..., :k].tanh_()` is a write into a view too, but tanh does not scale: in exact mode the signal then only
    depends on γ, the add `h + gelu(W·h)` mixes two such operands (no mixing addition), and `norm` renormalizes
    it -> invariant. Read on meta and on the real device."""
    torch.manual_seed(0)
    model = cls(lambda h, keep: h[..., :4].tanh_())
    roles = _roles(model, features=torch.randn(2, 6, 4), attention_mask=_padding_mask(2, 6))
    assert roles == {"in_norm.weight": INV, "norm.weight": S, "out_norm.weight": H}
    model.write = _zero_slice
    roles = _roles(model, features=torch.randn(2, 6, 4), attention_mask=_padding_mask(2, 6))
    assert roles == ZERO_PADDED


class ViewNorm(nn.Module):
    """A channels-first norm: normalizes (B, T, C) and returns the (B, C, T) view of its result."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight).transpose(1, 2)


class ChannelsFirst(nn.Module):
    """A conv residual block on a channels-first norm's output, whose padded frames are zeroed in place first."""

    def __init__(self, d=8):
        super().__init__()
        self.proj = nn.Linear(4, d)
        self.in_norm = ViewNorm(d)
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.out_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def forward(self, features, attention_mask=None):
        h = self.in_norm(self.proj(features))  # (B, C, T), a view of the norm's product
        if attention_mask is not None:
            h.masked_fill_(~attention_mask.bool()[:, None, :], 0.0)  # written through the view into its base
        h = h + F.gelu(self.conv(h))
        return self.head(self.out_norm(h.transpose(1, 2)))


def test_a_norm_output_written_through_its_view_keeps_its_role():
    """By hand: `in_norm` meets `h + gelu(conv(h))` with the scaling operand on the stream side -> stream; `out_norm`
    -> head. The in-place write goes to the view's base, so what follows no longer passes through the view's own
    autograd node; the version counter the view shares with its base shows it."""
    torch.manual_seed(0)
    model = ChannelsFirst()
    table = {"in_norm.weight": S, "out_norm.weight": H}
    assert _roles(model, features=torch.randn(2, 6, 4)) == table
    assert _roles(model, features=torch.randn(2, 6, 4), attention_mask=_padding_mask(2, 6)) == table


class Overwrite(nn.Module):
    """`out.copy_(x)` into a fresh buffer carries x on; `h.zero_()` ends a signal (a constant is left)."""

    def __init__(self, d=8):
        super().__init__()
        self.proj = nn.Linear(4, d)
        self.a_norm = nn.LayerNorm(d)
        self.b_norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.out_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    def forward(self, features):
        x = self.proj(features)
        h = torch.empty_like(x).copy_(self.a_norm(x))
        side = self.b_norm(x) * 1.0
        side.zero_()
        h = h + side + F.gelu(self.fc(h))
        return self.head(self.out_norm(h))


def test_copy_carries_the_signal_and_zero_ends_it():
    """By hand: `a_norm`'s copy meets `h + gelu(W·h)` on the stream side -> stream. `b_norm`'s signal is overwritten
    by zeros before any add: the loss does not see its scale -> invariant. `out_norm` -> head."""
    torch.manual_seed(0)
    report = classify_gammas(Overwrite(), inputs={"features": torch.randn(2, 6, 4)})
    assert report.roles == {"a_norm.weight": S, "b_norm.weight": INV, "out_norm.weight": H}
    assert "overwritten by a constant" in report.reasons["b_norm.weight"]


# --- wav2vec2 and Wav2Vec2-Conformer -----------------------------------------------------------------------------

_SPEECH = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20, conv_dim=(8, 8),
               conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
               vocab_size=12)

# By hand (exact mode; feat_extract_norm="group", post-LN encoder): the feature extractor's GroupNorm is renormalized by
# the feature projection's LayerNorm -> invariant. Every other norm but the last meets a residual add whose other
# operand depends on it through a non-homogeneous op after a matrix op (the positional convolution's GELU, attention's
# softmax, the FFN's GELU): a mixing addition, scaling operand on the stream side -> stream. The last layer's
# final_layer_norm feeds the CTC head -> head.
WAV2VEC2 = {
    "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight": INV,
    "wav2vec2.feature_projection.layer_norm.weight": S,
    "wav2vec2.encoder.layer_norm.weight": S,
    "wav2vec2.encoder.layers.0.layer_norm.weight": S,
    "wav2vec2.encoder.layers.0.final_layer_norm.weight": S,
    "wav2vec2.encoder.layers.1.layer_norm.weight": S,
    "wav2vec2.encoder.layers.1.final_layer_norm.weight": H,
}

# By hand: each conformer layer is pre-LN (`x + ½·ffn1(ln(x))`, `x + attn(ln(x))`, `x + conv(x)`, `x + ½·ffn2(ln(x))`)
# then final_layer_norm. The branch norms meet their residual add on the branch side (the other operand is the stream
# they started from) -> branch; inside the conv module the LayerNorm feeds pointwise conv, GLU and depthwise conv into
# the BatchNorm with no add between -> invariant, and the BatchNorm ends the branch -> branch. The feature projection's
# LayerNorm and layer 0's final_layer_norm are the stream into the next residual adds -> stream; layer 1's
# final_layer_norm is renormalized by encoder.layer_norm -> invariant, which feeds the CTC head -> head.
_LAYER = {"ffn1_layer_norm": B, "self_attn_layer_norm": B, "conv_module.layer_norm": INV,
          "conv_module.batch_norm": B, "ffn2_layer_norm": B}
CONFORMER = {
    "wav2vec2_conformer.feature_extractor.conv_layers.0.layer_norm.weight": INV,
    "wav2vec2_conformer.feature_projection.layer_norm.weight": S,
    "wav2vec2_conformer.encoder.layer_norm.weight": H,
    **{f"wav2vec2_conformer.encoder.layers.{i}.{n}.weight": r for i in range(2) for n, r in _LAYER.items()},
    "wav2vec2_conformer.encoder.layers.0.final_layer_norm.weight": S,
    "wav2vec2_conformer.encoder.layers.1.final_layer_norm.weight": INV,
}


def _wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    return Wav2Vec2ForCTC(Wav2Vec2Config(**_SPEECH))


def _conformer():
    from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC

    return Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(**_SPEECH, conv_depthwise_kernel_size=3))


@pytest.mark.parametrize("build,table", [(_wav2vec2, WAV2VEC2), (_conformer, CONFORMER)], ids=["wav2vec2", "conformer"])
@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padding mask"])
def test_speech_roles_by_hand_with_and_without_padding(build, table, masked):
    torch.manual_seed(0)
    inputs = {"input_values": torch.randn(2, 320)}
    if masked:
        inputs["attention_mask"] = _padding_mask(2, 320)
    assert _roles(build(), **inputs) == table


def test_the_feature_projection_norm_is_seen_by_the_loss():
    """The role's premise, measured: doubling wav2vec2's feature-projection γ changes the logits (stream, not
    invariant), with the padding mask too."""
    torch.manual_seed(0)
    model = _wav2vec2().eval()
    inputs = {"input_values": torch.randn(2, 320), "attention_mask": _padding_mask(2, 320)}
    with torch.no_grad():
        before = model(**inputs).logits
        model.wav2vec2.feature_projection.layer_norm.weight.mul_(2)
        after = model(**inputs).logits
    assert (after - before).abs().max() > 1e-3


# --- every speech encoder in transformers that takes a padding mask ------------------------------------------------

def _speech_encoders() -> list[tuple[str, str]]:
    """``(model_type, class name)`` for each speech-encoder head in transformers' auto mappings whose forward takes an
    ``attention_mask`` (first head found per type)."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    found: dict[str, str] = {}
    mappings = (auto.MODEL_FOR_CTC_MAPPING_NAMES, auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES,
                auto.MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES, auto.MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES)
    for mapping in mappings:
        for model_type, name in mapping.items():
            cls = getattr(transformers, name, None)
            if model_type not in found and cls is not None and \
                    "attention_mask" in inspect.signature(cls.forward).parameters:
                found[model_type] = name
    return sorted(found.items())


# Sizes for a tiny config, set where the config has the field (and its sub-configs have it).
_TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
             intermediate_size=20, conv_dim=(8, 8), conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=8,
             num_conv_pos_embedding_groups=2, vocab_size=12, d_model=16, encoder_layers=2, num_layers=2,
             encoder_attention_heads=2, encoder_ffn_dim=20, output_hidden_size=16, tdnn_dim=(8, 8),
             tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8, classifier_proj_size=8, num_mel_bins=16,
             feature_size=16, subsampling_conv_channels=8, audio_hidden_size=16, max_length=64, squeeze_factor=2,
             proj_codevector_dim=8, codevector_dim=8, num_codevectors_per_group=4, max_source_positions=32)


def _tiny(config, seen=None):
    from transformers import PretrainedConfig

    seen = set() if seen is None else seen
    if id(config) in seen:
        return config
    seen.add(id(config))
    fields = config.to_dict()
    for key, value in _TINY.items():
        if key in fields and isinstance(fields[key], (tuple, list)) == isinstance(value, tuple):
            setattr(config, key, value)
    if "num_feat_extract_layers" in fields:
        config.num_feat_extract_layers = len(config.conv_dim)
    for value in list(vars(config).values()):
        if isinstance(value, PretrainedConfig):
            _tiny(value, seen)
    return config


@pytest.mark.parametrize("model_type,class_name", _speech_encoders(), ids=[t for t, _ in _speech_encoders()])
def test_every_speech_encoder_reads_the_same_roles_with_a_padding_mask(model_type, class_name):
    import transformers
    from transformers import AutoConfig

    from hf_gammareg.analysis.inputs import candidate_inputs

    torch.manual_seed(0)
    model = getattr(transformers, class_name)(_tiny(AutoConfig.for_model(model_type))).eval()
    refused = []
    for batch in candidate_inputs(model, "cpu"):
        (main, dummy), = ((k, v) for k, v in batch.items() if v.is_floating_point())
        x = torch.randn(2, 3200) if dummy.dim() == 2 else torch.randn(dummy.shape)
        # A padding mask is per frame: over the waveform's samples, or the first frame axis the model accepts.
        for length in dict.fromkeys(x.shape[1:]):
            inputs = {main: x, "attention_mask": _padding_mask(x.shape[0], length)}
            try:
                with torch.no_grad():
                    model(**inputs)
            except Exception as exc:  # noqa: BLE001 - not this shape: the next
                refused.append(f"{tuple(x.shape)}/mask {length}: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            without = _roles(model, **{main: x})
            assert without, f"{model_type}: no role read"
            assert _roles(model, **inputs) == without
            return
    pytest.skip(f"{model_type}: no tiny batch with a per-frame padding mask runs ({'; '.join(refused[:2])})")
