"""γ-norm callback and history, plots, saved configs and report, model card, GammaRegConfig validation."""

import json
import sys

import hub_mock
import pytest
import torch
from models import tiny_hf_resnet
from test_trainer import ALL_GAMMAS, Images, _args

from hf_gammareg import GammaRegConfig, GammaRegTrainer, GammaRegTrainingArguments, GammaReport
from hf_gammareg.cli import main


def _train(tmp_path, policy="guidelines", **kw):
    torch.manual_seed(0)
    model = tiny_hf_resnet("basic")
    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=4, logging_strategy="steps", logging_steps=2,
                                              learning_rate=0.05, **kw), gamma_policy=policy)
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Images())
    trainer.train()
    return trainer


def test_callback_logs_per_role_and_grows_history(tmp_path):
    trainer = _train(tmp_path)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        for role in ("branch", "invariant", "stream"):
            assert entry[f"gamma/{role}/norm"] > 0 and entry[f"gamma/{role}/abs_mean"] > 0
        assert "gamma/head/norm" not in entry  # ResNet has no head γ
    lines = (tmp_path / "gamma_history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [0, 2, 4, 4]  # start, two logging steps, the final summary
    assert records[0]["roles"]["invariant"]["count"] == 2 and records[0]["policy"] == "guidelines"
    assert {r["invariance"] for r in records} == {"exact"}  # plots name it: roles depend on it
    # γ start at 1: mean ‖γ‖ of a 16-channel BN is 4, and training moves it
    assert records[0]["roles"]["stream"]["norm"] == pytest.approx((4 + 32 ** 0.5) / 2)
    assert records[-1]["roles"]["branch"]["norm"] != records[0]["roles"]["branch"]["norm"]


def test_callback_can_be_turned_off(tmp_path):
    model = tiny_hf_resnet("basic")
    args = GammaRegTrainingArguments(**_args(tmp_path, max_steps=1), gamma_log_norms=False)
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Images())
    trainer.train()
    assert not (tmp_path / "gamma_history.jsonl").exists()


def test_plot_one_run_and_comparison(tmp_path):
    _train(tmp_path / "a", policy="guidelines")
    _train(tmp_path / "b", policy="all")
    out = tmp_path / "plots" / "cmp.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "one.png"), "--stat", "abs_mean"]) == 0
    assert (tmp_path / "one.png").stat().st_size > 10_000


def _history(run_dir, roles, **setting):
    """A gamma_history.jsonl by hand: ``roles`` = {role: (start norm, change per step)}, steps 0..40 by 10."""
    run_dir.mkdir(parents=True)
    with open(run_dir / "gamma_history.jsonl", "w", encoding="utf-8") as f:
        for step in range(0, 41, 10):
            stats = {r: {"norm": a + b * step, "abs_mean": (a + b * step) / 4, "count": 2}
                     for r, (a, b) in roles.items()}
            f.write(json.dumps({"step": step, "epoch": step / 40, **setting, "roles": stats}) + "\n")


def test_plot_one_colour_per_run_and_one_legend(tmp_path):
    """An exact and an approximate run have different roles (BERT: stream vs invariant). Each run must keep
    its colour in every panel and be named once, with policy and invariance, in one figure legend."""
    from hf_gammareg.callbacks import history_figure

    _history(tmp_path / "exact", {"stream": (5.657, 0.0), "head": (5.657, -2e-7)}, policy="guidelines",
             invariance="exact")
    _history(tmp_path / "approx", {"invariant": (5.657, -0.01), "head": (5.657, -4e-7)}, policy="guidelines",
             invariance="approximate")
    _history(tmp_path / "old", {"head": (5.657, -1e-7)}, policy="hf-default")  # written before `invariance`
    fig = history_figure([tmp_path / "exact", tmp_path / "approx", tmp_path / "old"])
    fig.draw_without_rendering()  # tick labels and the offset text exist only once drawn
    labels = ["exact (guidelines, exact)", "approx (guidelines, approximate)", "old (hf-default)"]
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert list(axes) == ["invariant γ", "stream γ", "head γ"]
    lines = {title: {line.get_label(): line.get_color() for line in ax.get_lines()} for title, ax in axes.items()}
    assert list(lines["invariant γ"]) == [labels[1]] and list(lines["stream γ"]) == [labels[0]]
    assert list(lines["head γ"]) == labels
    colour = lines["head γ"]
    assert len(set(colour.values())) == 3  # three runs, three colours …
    assert lines["invariant γ"][labels[1]] == colour[labels[1]]  # … the same in every panel
    assert lines["stream γ"][labels[0]] == colour[labels[0]]
    # One legend, the figure's: every run once, its handle in the run's colour; no legend inside a panel.
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == labels
    assert [h.get_color() for h in legend.legend_handles] == [colour[label] for label in labels]
    # The panels a run is missing from say so.
    assert "no stream γ in: approx, old" in [t.get_text() for t in axes["stream γ"].texts]
    # Plain tick values: head norms span 5.65698–5.657, which the default formatter shows as an offset.
    head = axes["head γ"]
    assert head.yaxis.get_offset_text().get_text() == ""
    ticks = [float(t.get_text().replace("−", "-")) for t in head.get_yticklabels() if t.get_text()]
    assert all(5.6 < v < 5.7 for v in ticks)


def test_plot_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    _history(tmp_path / "run", {"head": (1.0, 0.0)}, policy="none", invariance="exact")
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib…` now raises ImportError
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "plotting needs matplotlib" in err and "pip install 'hf_gammareg[plot]'" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


SWEEP_CSV = """# command: python recipes/sweep.py ...
entry,policy,invariance,seed,eval_accuracy,n_gammas,n_decayed,train_loss,wall_s,primary_metric
hf-default,hf-default,exact,0,80.0,13,0,0.5,1,eval_accuracy
hf-default,hf-default,exact,1,81.0,13,0,0.5,1,eval_accuracy
guidelines,guidelines,exact,0,81.0,13,0,0.5,1,eval_accuracy
guidelines,guidelines,exact,1,83.0,13,0,0.5,1,eval_accuracy
all,all,exact,0,79.5,13,13,0.5,1,eval_accuracy
all,all,exact,1,80.0,13,13,0.5,1,eval_accuracy
"""


def test_plot_sweep_bars_and_paired_differences(tmp_path, capsys):
    from hf_gammareg.sweeps import sweep_figure

    csv_path = tmp_path / "tiny.csv"
    csv_path.write_text(SWEEP_CSV)
    out = tmp_path / "tiny.png"
    assert main(["plot", "--sweep", str(csv_path), "--baseline", "hf-default", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    fig = sweep_figure(str(csv_path), baseline="hf-default")
    bars, diffs = fig.axes
    assert [p.get_height() for p in bars.patches] == [80.5, 82.0, 79.75]  # means over the two seeds
    assert [t.get_text() for t in bars.get_xticklabels()] == ["hf-default", "guidelines", "all"]
    # Paired by seed: guidelines − hf-default = (+1, +2) → mean 1.5; all − hf-default = (−0.5, −1) → −0.75
    points = sorted((float(x), float(y)) for line in diffs.get_lines() for x, y in zip(*line.get_data())
                    if line.get_marker() == "o")
    assert points == [(0.0, 1.5), (1.0, -0.75)]
    assert [t.get_text() for t in diffs.get_xticklabels()] == ["guidelines", "all"]  # the baseline is the 0 line
    assert main(["plot", "--sweep", str(csv_path), str(tmp_path)]) == 2  # runs and a sweep: one or the other
    assert "not both" in capsys.readouterr().err
def test_checkpoints_and_final_model_carry_config_and_report(tmp_path):
    trainer = _train(tmp_path, policy="only:branch", save_strategy="steps", save_steps=2)
    trainer.save_model()
    for folder in (tmp_path / "checkpoint-2", tmp_path / "checkpoint-4", tmp_path):
        assert GammaRegConfig.from_pretrained(folder) == GammaRegConfig(policy="only:branch")
        report = GammaReport.from_json((folder / "gamma_report.json").read_text())
        assert set(report.roles) == ALL_GAMMAS


def test_model_card_has_gamma_section(tmp_path):
    trainer = _train(tmp_path)
    trainer.create_model_card(model_name="tiny-resnet")
    card = (tmp_path / "README.md").read_text()
    assert "## γ regularization" in card
    assert "policy `guidelines`, invariance `exact`, decoupled weight decay 0.05 on 4 of 6" in card
    assert "| invariant | 2 | 48 | 2 |" in card  # 16 + 32 channels
    assert "| stream | 2 | 48 | 0 |" in card
    trainer.create_model_card(model_name="tiny-resnet")  # idempotent
    assert (tmp_path / "README.md").read_text().count("## γ regularization") == 1


# -- GammaRegConfig --------------------------------------------------------------------------------
def test_config_round_trip(tmp_path):
    cfg = GammaRegConfig(policy="branch,invariant", gamma_weight_decay=0.1, invariance="approximate",
                         include=["^a"], exclude=["b$"], regularization="l2")
    cfg.save_pretrained(tmp_path)
    assert GammaRegConfig.from_pretrained(tmp_path) == cfg
    assert GammaRegConfig.from_pretrained(tmp_path / "gammareg_config.json") == cfg


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"policy": "guidelines", "evil": 1}', r"unknown field\(s\) \['evil'\]"),
        ('{"policy": 3}', "policy: expected a string"),
        ('{"policy": "only:trunk"}', "policy: unknown gamma policy"),
        ('{"gamma_weight_decay": "0.1"}', "gamma_weight_decay: expected a number"),
        ('{"gamma_weight_decay": -0.5}', "gamma_weight_decay: must be a finite number >= 0"),
        ('{"invariance": "fuzzy"}', "invariance: must be one of"),
        ('{"include": "abc"}', "include: expected a list of strings"),
        ('{"exclude": ["(unclosed"]}', "exclude: invalid regular expression"),
        ('{"regularization": "l1"}', "regularization: must be one of"),
        ('["not", "an", "object"]', "must hold a JSON object"),
        ("{not json", "is not valid JSON"),
        ('{"policy": "' + "x" * 5000 + '"}', "policy: 5000 characters is too long"),
        ('{"include": ["' + "a" * 2000 + '"]}', "longer than 1000"),
    ],
)
def test_config_validation_names_the_field(tmp_path, content, match):
    (tmp_path / "gammareg_config.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        GammaRegConfig.from_pretrained(tmp_path)


def test_config_from_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no gammareg_config.json"):
        GammaRegConfig.from_pretrained(tmp_path)


def test_config_from_hub_repo_id_reads_json_only(tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "gammareg_config.json").write_text('{"policy": "only:branch", "gamma_weight_decay": 0.2}')
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = GammaRegConfig.from_pretrained("someone/some-model", revision="main")
    assert cfg == GammaRegConfig(policy="only:branch", gamma_weight_decay=0.2)
    assert calls == [("someone/some-model", "gammareg_config.json", {"revision": "main"})]
    (tmp_path / "gammareg_config.json").write_text('{"policy": "only:branch", "pickle": "cos\\nsystem"}')
    with pytest.raises(ValueError, match="unknown field"):
        GammaRegConfig.from_pretrained("someone/some-model")


def test_config_push_to_hub_and_back(tmp_path, mock_hub):
    """push_to_hub creates the repo and commits gammareg_config.json alone; from_pretrained reads it back."""
    cfg = GammaRegConfig(policy="only:branch", gamma_weight_decay=0.2, invariance="approximate", include=["ln_f"])
    info = cfg.push_to_hub("someone/tiny", private=True, token="hf_fake", commit_message="γ config")
    assert info.oid == hub_mock.COMMIT_OID
    created = mock_hub.created[0]
    assert (created["organization"], created["name"]) == ("someone", "tiny")
    assert created.get("visibility") == "private" or created.get("private") is True
    (commit,) = mock_hub.commits
    assert (commit["repo_id"], commit["revision"], commit["summary"]) == ("someone/tiny", "main", "γ config")
    assert list(commit["files"]) == ["gammareg_config.json"]
    assert json.loads(commit["files"]["gammareg_config.json"]) == {
        "policy": "only:branch", "gamma_weight_decay": 0.2, "invariance": "approximate", "include": ["ln_f"],
        "exclude": [], "regularization": "decoupled"}
    assert all(r.headers.get("authorization") == "Bearer hf_fake" for r in mock_hub.requests if r.method == "POST")
    assert GammaRegConfig.from_pretrained("someone/tiny", cache_dir=str(tmp_path)) == cfg


def test_config_push_to_a_branch_refuses_an_invalid_config(mock_hub):
    cfg = GammaRegConfig()
    cfg.push_to_hub("someone/tiny", revision="dev", token="hf_fake")
    assert (mock_hub.commits[-1]["revision"], mock_hub.commits[-1]["summary"]) == ("dev", "Upload gammareg_config.json")
    cfg.policy = "guideline"  # changed after construction
    with pytest.raises(ValueError, match="policy: unknown gamma policy"):
        cfg.push_to_hub("someone/tiny", token="hf_fake")
    assert len(mock_hub.commits) == 1


def test_pushes_during_training_carry_the_gamma_files(tmp_path, mock_hub):
    """hub_strategy every_save: each checkpoint's push uploads gammareg_config.json and gamma_report.json with
    the weights (transformers copies only the modeling files of a checkpoint before uploading output_dir)."""
    trainer = _train(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-resnet", hub_token="hf_fake",
                     save_strategy="steps", save_steps=2, hub_strategy="every_save")
    trainer._finish_current_push()
    during = [c for c in mock_hub.commits if c["summary"].startswith("Training in progress")]
    assert during, "no push during training"
    files = during[0]["files"]
    assert "model.safetensors" in files and "gammareg_config.json" in files and "gamma_report.json" in files
    assert json.loads(files["gammareg_config.json"])["policy"] == "guidelines"
    assert set(json.loads(files["gamma_report.json"])["roles"]) == set(ALL_GAMMAS)
