"""classify_gammas leaves no trace, falls back from meta when it must, and fails clearly."""

import copy
import warnings

import pytest
import torch
from models import TinyResNet, tiny_bert, tiny_llama
from torch import nn

from hf_gammareg import GammaAnalysisError, GammaReport, classify_gammas


def _snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: b.detach().clone() for n, b in model.named_buffers()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
    )


def _assert_same(model, snap):
    params, buffers, modes, flags = snap
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
        assert p.grad is None, n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


class MetaHostile(nn.Module):
    """Copies a tensor to the CPU inside forward, which no meta tensor can do."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 6)
        self.ln = nn.LayerNorm(6)

    def forward(self, x):
        _ = x.detach().cpu()  # a host sync, as logging or numpy code in a forward does
        h = self.bn(self.fc1(x))
        return self.ln(h + self.fc2(torch.relu(h)))


@pytest.mark.parametrize("build", [tiny_bert, TinyResNet])
def test_meta_pass_leaves_model_untouched(build):
    model = build().train()
    frozen = next(iter(model.parameters()))
    frozen.requires_grad_(False)
    snap = _snapshot(model)
    rng = torch.get_rng_state()
    classify_gammas(model)
    _assert_same(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)


def test_fallback_runs_on_real_device_and_restores_everything():
    torch.manual_seed(0)
    model = MetaHostile().train()  # train mode: BatchNorm would update running stats if left so
    model.bn.requires_grad_(False)
    snap = _snapshot(model)
    rng = torch.get_rng_state()
    report = classify_gammas(model)
    assert report.device == "cpu"
    # bn → (identity and fc2·relu) → add → ln: the other operand grows from bn's signal, and relu
    # keeps it homogeneous, so the add carries bn's scale on both sides into ln.
    assert report.roles == {"bn.weight": "invariant", "ln.weight": "head"}
    _assert_same(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)


class TanhGeluPostLN(nn.Module):
    """A post-LN FFN with tanh-GELU written out: x + 0.044715·x³ is an addition inside the activation."""

    def __init__(self, d=8):
        super().__init__()
        self.emb = nn.Embedding(10, d)
        self.ln0 = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)

    @staticmethod
    def gelu(x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608 * (x + 0.044715 * x.pow(3))))

    def forward(self, ids):
        x = self.ln0(self.emb(ids))
        return self.head(self.ln1(self.fc2(self.gelu(self.fc1(x)))))


def test_addition_inside_an_activation_is_not_a_residual_add():
    report = classify_gammas(TanhGeluPostLN(), inputs=(torch.zeros(2, 4, dtype=torch.long),))
    assert report.roles == {"ln0.weight": "invariant", "ln1.weight": "head"}


class ParallelSum(nn.Module):
    """x → stem BN → [conv-BN] + [conv-BN-relu-conv-BN]: two parallel branches of different depth."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.short = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.deep = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        y = self.short(x) + self.deep(x)
        return self.fc(y.mean((2, 3)))


def test_parallel_branches_compare_depth():
    report = classify_gammas(ParallelSum())
    assert report.roles == {
        "stem.1.weight": "invariant",
        "short.1.weight": "stream",
        "deep.1.weight": "invariant",
        "deep.4.weight": "branch",
    }


def test_user_inputs_dict_and_unused_norm():
    model = tiny_llama()
    model.extra_norm = nn.LayerNorm(32)  # never called in forward
    report = classify_gammas(model, inputs={"input_ids": torch.ones(1, 5, dtype=torch.long)})
    assert report.unused == ["extra_norm.weight"]
    assert "extra_norm.weight" not in report.roles
    assert report.roles["model.norm.weight"] == "head"


def test_report_json_round_trip_and_table():
    report = classify_gammas(TinyResNet())
    again = GammaReport.from_json(report.to_json())
    assert again == report
    table = report.to_table().splitlines()  # the report's own: roles, no policy
    assert table[0].split()[:4] == ["parameter", "norm", "role", "reason"]
    row = next(line for line in table if line.startswith("layer2.0.downsample.1.weight"))
    assert row.split()[1:3] == ["BatchNorm2d", "stream"]
    row = next(line for line in table if line.startswith("layer1.0.bn1.weight"))
    assert row.split()[1:3] == ["BatchNorm2d", "invariant"]


def test_report_json_rejects_bad_roles():
    with pytest.raises(ValueError, match="roles outside"):
        GammaReport.from_json('{"roles": {"a.weight": "trunk"}, "reasons": {}, "norm_types": {}}')
    with pytest.raises(ValueError, match="unknown fields"):
        GammaReport.from_json('{"roles": {}, "reasons": {}, "norm_types": {}, "evil": 1}')


# -- bad input -------------------------------------------------------------------------------------
def test_unknown_invariance_mode():
    with pytest.raises(ValueError, match="invariance must be one of"):
        classify_gammas(TinyResNet(), invariance="fuzzy")


def test_model_without_norms_warns_and_reports_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = classify_gammas(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    assert report.roles == {} and report.gammas == []
    assert any("no normalization scale parameters" in str(w.message) for w in caught)


class NeedsTwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x, scale):  # dummy inputs cannot supply `scale`
        return self.ln(self.fc(x)) * scale


def test_forward_that_cannot_run_with_dummy_inputs_names_the_fix():
    with pytest.raises(GammaAnalysisError, match="Pass `inputs=`"):
        classify_gammas(NeedsTwoInputs())
    report = classify_gammas(NeedsTwoInputs(), inputs=(torch.zeros(2, 4), torch.ones(1)))
    assert report.roles == {"ln.weight": "head"}


def test_not_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        classify_gammas(copy.deepcopy)


class PreNormBlock(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm, self.fc = norm, nn.Linear(8, 8)

    def forward(self, x):
        return x + self.fc(torch.nn.functional.silu(self.norm(x)))


class TorchNorms(nn.Module):
    """Pre-norm residual blocks with each of torch's own norm types."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.blocks = nn.Sequential(PreNormBlock(nn.RMSNorm(8)), PreNormBlock(nn.GroupNorm(2, 8)),
                                    PreNormBlock(nn.LayerNorm(8)))
        self.out = nn.RMSNorm(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.out(self.blocks(self.inp(x))))


def test_torch_norm_types():
    report = classify_gammas(TorchNorms())
    assert report.roles == {
        "blocks.0.norm.weight": "branch",
        "blocks.1.norm.weight": "branch",
        "blocks.2.norm.weight": "branch",
        "out.weight": "head",
    }
    assert report.norm_types == {
        "blocks.0.norm.weight": "RMSNorm",
        "blocks.1.norm.weight": "GroupNorm",
        "blocks.2.norm.weight": "LayerNorm",
        "out.weight": "RMSNorm",
    }


class RawInputResidual(nn.Module):
    """The raw float input is the residual stream itself: x + fc(ln(x)), twice, with one shared LN."""

    def __init__(self, d=8):
        super().__init__()
        self.shared, self.out = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 2)

    def forward(self, x):
        x = x + self.fc1(self.shared(x))
        x = x + self.fc2(self.shared(x))
        return self.head(self.out(x))


def test_raw_input_counts_as_the_stream():
    report = classify_gammas(RawInputResidual())  # dummy input shaped from the first LayerNorm
    assert report.roles == {"shared.weight": "branch", "out.weight": "head"}


def test_half_precision_model_gets_dummy_inputs_in_its_dtype():
    # MetaHostile cannot run on meta, so this runs a real CPU forward, where a bf16 Linear refuses
    # float32 inputs.
    report = classify_gammas(MetaHostile().to(torch.bfloat16))
    assert report.device == "cpu"
    assert report.roles == {"bn.weight": "invariant", "ln.weight": "head"}
