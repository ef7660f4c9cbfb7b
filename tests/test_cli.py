"""`hf-gammareg inspect` and `plot`, offline on embedded configs."""

import json

import pytest

from hf_gammareg.cli import embedded_configs, main, make_parser


def test_help_for_every_parser(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit) as exc:
            make_parser().parse_args(argv)
        assert exc.value.code == 0
    assert "--policy" in capsys.readouterr().out


def test_embedded_configs_are_shipped():
    assert {"bert-base-uncased", "gpt2", "meta-llama-3-8b", "resnet-50", "iwslt14-transformer"} <= set(embedded_configs())


def test_inspect_gpt2_plain_table(capsys):
    assert main(["inspect", "gpt2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["parameter", "norm", "role", "decay", "reason"]
    rows = {line.split()[0]: line.split()[1:4] for line in out[2:] if line.startswith("transformer.")}
    assert len(rows) == 25
    assert rows["transformer.h.11.ln_1.weight"] == ["LayerNorm", "branch", "yes"]
    assert rows["transformer.ln_f.weight"] == ["LayerNorm", "head", "no"]
    assert out[-1].endswith("policy 'guidelines' decays 24 (18,432 values)")


def test_inspect_json_schema(capsys):
    assert main(["inspect", "resnet-50", "--json", "--policy", "only:stream"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"roles", "reasons", "norm_types", "numel", "unused", "hf_default", "invariance",
                         "model_class", "device", "policy", "decayed"}
    assert data["model_class"] == "ResNetForImageClassification" and data["device"] == "meta"
    assert len(data["roles"]) == 53 and data["policy"] == "only:stream"
    # ResNet-50: the 4 projection-shortcut BNs are the only `stream` γ (the stem feeds a projection)
    assert data["decayed"] == sorted(f"resnet.encoder.stages.{i}.layers.0.shortcut.normalization.weight" for i in range(4))
    assert data["roles"]["resnet.embedder.embedder.normalization.weight"] == "invariant"


def test_inspect_approximate_changes_post_ln_roles(capsys):
    assert main(["inspect", "iwslt14-transformer", "--json", "--invariance", "approximate"]) == 0
    roles = json.loads(capsys.readouterr().out)["roles"]
    assert roles["model.encoder.layers.0.final_layer_norm.weight"] == "invariant"
    assert roles["model.encoder.layers.5.final_layer_norm.weight"] == "branch"
    assert roles["model.decoder.layers.5.final_layer_norm.weight"] == "head"


def test_inspect_unknown_model_fails_clearly(capsys):
    assert main(["inspect", "no-such-model-anywhere"]) == 2
    err = capsys.readouterr().err
    assert "cannot load a config for 'no-such-model-anywhere'" in err and "bert-base-uncased" in err


def test_inspect_bad_policy_fails_clearly(capsys):
    assert main(["inspect", "gpt2", "--policy", "guideline"]) == 2
    assert "unknown gamma policy" in capsys.readouterr().err


def test_plot_missing_history_fails_clearly(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "gamma_history.jsonl" in capsys.readouterr().err
