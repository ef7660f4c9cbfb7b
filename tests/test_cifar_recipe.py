"""The CIFAR ResNet recipe: the model, its γ roles (by hand, from docs/design.md), the ablation policies' optimizer
groups, a 2-step run on a tiny synthetic CIFAR-shaped archive, bad input, and the resumable sweep."""

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from conftest import load_recipe

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# ResNet-8 (n = 1 block a stage): the stem BN, then per stage a block with bn1, bn2, and from stage 2 on a
# projection shortcut. docs/design.md § Reference classifications (HF ResNet, basic blocks, same widths):
# stem → stream (it feeds the stream); first BN of a block → invariant (conv → BN → ReLU → conv → BN: every
# path renormalized); second BN → branch (meets the residual add on the branch side); shortcut BN → stream.
STEM = "resnet.stem.bn.weight"
INNER = ["resnet.stages.0.0.bn1.weight", "resnet.stages.1.0.bn1.weight", "resnet.stages.2.0.bn1.weight"]
LAST = ["resnet.stages.0.0.bn2.weight", "resnet.stages.1.0.bn2.weight", "resnet.stages.2.0.bn2.weight"]
SHORTCUT = ["resnet.stages.1.0.shortcut.bn.weight", "resnet.stages.2.0.shortcut.bn.weight"]
ALL = {STEM, *INNER, *LAST, *SHORTCUT}
ABLATION = {  # sweep entry -> the γ it decays, by hand
    "none": set(),
    "stem=none@include=(^|\\.)(stem|embedder)\\.": {STEM},
    "shortcut=none@include=\\.shortcut\\.": set(SHORTCUT),
    "only:invariant": set(INNER),
    "only:branch": set(LAST),
    "guidelines": set(INNER) | set(LAST),
    "all": ALL,
    "hf-default": ALL,  # Trainer's name rule decays every BatchNorm weight called `bn…`
}
WD = 5e-4


load = load_recipe


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A CIFAR-shaped archive: 10 classes × (4 train + 2 test) random 32×32 JPEGs, in the real layout."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    with tarfile.open(root / "cifar10-jpeg.tar.xz", "w:xz") as tar:
        for split, n in (("train", 4), ("test", 2)):
            for cls in CLASSES:
                for k in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{k:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return root


def tiny_argv(archive, out, *extra):
    return ["--data_dir", str(archive), "--cache_dir", str(archive / "cache"), "--depth", "8", "--use_cpu",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "10",
            "--optim", "sgd", "--optim_args", "momentum=0.9,nesterov=True", "--learning_rate", "0.1",
            "--weight_decay", str(WD), "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--output_dir", str(out), *extra]


def test_forward_backward_and_save_load_round_trip(tmp_path):
    modeling = load("modeling_cifar_resnet")
    from transformers import AutoConfig, AutoModelForImageClassification

    model = modeling.CifarResNetForImageClassification(modeling.CifarResNetConfig(depth=20))
    assert sum(p.numel() for p in model.parameters()) == 272_474  # He et al.'s ResNet-20 (~0.27M), option B
    out = model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (4, 10)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).depth == 20
    again = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(again).__name__ == "CifarResNetForImageClassification"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("depth", [7, 21, 0, "20"])
def test_unknown_depth_is_refused(depth):
    modeling = load("modeling_cifar_resnet")
    with pytest.raises(ValueError, match="6n \\+ 2"):
        modeling.CifarResNetConfig(depth=depth)


def test_resnet20_roles_by_hand():
    modeling = load("modeling_cifar_resnet")
    from hf_gammareg import classify_gammas

    report = classify_gammas(modeling.CifarResNetForImageClassification(modeling.CifarResNetConfig(depth=20)))
    expected = {"resnet.stem.bn.weight": "stream"}
    for stage in range(3):
        for block in range(3):
            expected[f"resnet.stages.{stage}.{block}.bn1.weight"] = "invariant"
            expected[f"resnet.stages.{stage}.{block}.bn2.weight"] = "branch"
    expected["resnet.stages.1.0.shortcut.bn.weight"] = "stream"
    expected["resnet.stages.2.0.shortcut.bn.weight"] = "stream"
    assert report.roles == expected and report.unused == []


@pytest.mark.parametrize("text", sorted(ABLATION))
def test_each_ablation_policy_decays_exactly_its_gammas(text, tmp_path):
    modeling = load("modeling_cifar_resnet")
    sweep = load("sweep")
    from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments

    entry = sweep.parse_entry(text)
    args = GammaRegTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", optim="sgd", weight_decay=WD,
        gamma_policy=entry.policy, gamma_include=entry.include or None)
    model = modeling.CifarResNetForImageClassification(modeling.CifarResNetConfig(depth=8))
    trainer = GammaRegTrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert {n for n in ALL if decay[n] == WD} == ABLATION[text]
    assert {n for n in ALL if decay[n] == 0.0} == ALL - ABLATION[text]
    assert all(decay[n] == WD for n in decay if n.endswith("conv.weight") or ".conv" in n)  # convs: always decayed


def test_two_step_run_on_a_tiny_archive(archive, tmp_path):
    recipe = load("cifar_resnet")
    out = tmp_path / "run"
    assert recipe.main(tiny_argv(archive, out, "--gamma_policy", "guidelines")) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["n_train"] == 40 and record["n_eval"] == 20
    assert 0.0 <= record["metrics"]["accuracy"] <= 100.0 and record["images_per_s"] > 0
    assert 0.0 < record["data_share"] < 1.0
    decayed = {n for n, g in record["gamma"]["gammas"].items() if g["optimizer_weight_decay"] == WD}
    assert decayed == set(INNER) | set(LAST)
    assert set(record["gamma_rms_end"]) == {"stem", "shortcut", "inner", "last"}
    assert record["decayed_by_category"] == {"stem": 0, "shortcut": 0, "inner": 3, "last": 3}
    assert any(f.startswith("cifar10-") for f in os.listdir(archive / "cache"))  # decoded once, cached


def test_hf_resnet_flag(archive, tmp_path):
    recipe = load("cifar_resnet")
    out = tmp_path / "hf"
    assert recipe.main(tiny_argv(archive, out, "--model_type", "hf_resnet", "--gamma_policy", "hf-default")) == 0
    record = json.loads((out / "results.json").read_text())
    gammas = record["gamma"]["gammas"]
    # Trainer's name rule misses `normalization`: hf-default decays every BN γ of transformers' ResNet.
    assert gammas and all(g["optimizer_weight_decay"] == WD for g in gammas.values())
    assert any("embedder" in n for n in gammas) and any("shortcut" in n for n in gammas)


def test_bad_input_fails_before_training(archive, tmp_path):
    recipe = load("cifar_resnet")
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        recipe.main(tiny_argv(tmp_path / "nowhere", tmp_path / "a"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="cifar10-jpeg.tar.xz"):
        recipe.main(tiny_argv(empty, tmp_path / "b"))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cifar10-jpeg.tar.xz").write_bytes((archive / "cifar10-jpeg.tar.xz").read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        recipe.main(tiny_argv(corrupt, tmp_path / "c"))
    with pytest.raises(ValueError, match="6n \\+ 2"):
        recipe.main(tiny_argv(archive, tmp_path / "d") + ["--depth", "9"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "d" / "results.json").exists()


def test_sweep_appends_each_run_and_skips_finished_ones(archive, tmp_path, monkeypatch):
    sweep = load("sweep")
    results, runs = tmp_path / "results", tmp_path / "runs"
    base = ["--recipe", os.path.join(RECIPES, "cifar_resnet.py"), "--name", "tiny", "--launcher", "in-process",
            "--seeds", "0", "--baseline", "none", "--results_dir", str(results), "--runs_dir", str(runs)]

    def run(*policies):
        return sweep.main(base + ["--policies", *policies, "--", *tiny_argv(archive, tmp_path / "x")[:-2]])

    calls = []
    real = sweep.run_one
    monkeypatch.setattr(sweep, "run_one", lambda *a: (calls.append(a[2]), real(*a))[1])
    assert run("none", "stem=none@include=(^|\\.)stem\\.") == 0
    assert len(calls) == 2
    assert run("none", "stem=none@include=(^|\\.)stem\\.", "guidelines") == 0  # resumed: only the new entry runs
    assert len(calls) == 3 and "guidelines" in calls[-1]
    with open(results / "tiny.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert [(r["label"], r["n_decayed"]) for r in rows] == [("none", "0"), ("stem", "1"), ("guidelines", "6")]
    table = (results / "tiny.md").read_text(encoding="utf-8")
    assert "| `stem` | none, include `(^\\|\\.)stem\\.` | 1 / 9 |" in table and "(baseline)" in table
    assert "resumed command:" in (results / "tiny.csv").read_text(encoding="utf-8")


# -- the horizon configs ----------------------------------------------------------------------------------
def horizon_args(recipe, config, out, *extra):
    return recipe.parse_args(recipe.make_parser(), [os.path.join(RECIPES, "configs", config), "--output_dir", str(out),
                                                    "--use_cpu", "--tf32", "false", *extra])


@pytest.mark.parametrize("config", ["cifar_resnet_horizon_cpu.yaml", "cifar_resnet_gpu.yaml"])
def test_horizon_configs_reach_sigma_3(config, tmp_path):
    from hf_gammareg.horizon import planned_decay_horizon

    recipe = load("cifar_resnet")
    args, targs = horizon_args(recipe, config, tmp_path)
    assert args.train_per_class is None and args.test_per_class is None  # all 50,000 / all 10,000 images
    assert (targs.optim, targs.learning_rate, targs.weight_decay) == ("sgd", 0.1, 5e-4)
    h = planned_decay_horizon(targs, num_steps=targs.max_steps, weight_decay=targs.weight_decay)
    # By hand (the config's comment): 5e-4 / (1 − 0.9) · 0.1 · (200/2 + 5,200 + 1,800/2) = 3.10
    assert h.decay == "coupled" and h.integral >= 3
    assert h.integral == pytest.approx(3.10, abs=0.01)
    assert h.shrink < 0.05


def test_two_step_run_of_the_horizon_config(archive, tmp_path):
    from hf_gammareg.horizon import planned_decay_horizon

    recipe = load("cifar_resnet")
    out = tmp_path / "h"
    flags = ["--data_dir", str(archive), "--cache_dir", str(archive / "cache"), "--max_steps", "2",
             "--warmup_steps", "0", "--lr_scheduler_kwargs", '{"num_decay_steps": 1}', "--depth", "8",
             "--per_device_eval_batch_size", "10", "--trajectory_window", "1", "--results_file", str(out / "r.json")]
    argv = [os.path.join(RECIPES, "configs", "cifar_resnet_horizon_cpu.yaml"), "--output_dir", str(out), *flags]
    assert recipe.main(argv) == 0
    record = json.loads((out / "r.json").read_text())
    measured = record["decay_horizon_measured"]
    assert measured["steps"] == 2 and measured["nesterov"] and measured["momentum"] == 0.9
    # No warm-up, one stable step at 0.1, then the one decay step at the start of its cosine (still 0.1):
    # Σ lr = 0.2 → Σ = 5e-4 · 0.2 / (1 − 0.9) = 1e-3
    assert measured["decay_horizon"] == pytest.approx(1e-3)
    assert record["table_columns"]["decay_horizon"] == measured["decay_horizon"]
    # The library's prediction for the same arguments, and the Trainer's own record, agree with the measurement.
    _, targs = horizon_args(recipe, "cifar_resnet_horizon_cpu.yaml", out, *flags[:10])
    planned = planned_decay_horizon(targs, num_steps=2, weight_decay=5e-4)
    assert planned.shrink == pytest.approx(measured["shrink"], abs=1e-5)
    assert record["gamma"]["decay_horizon"]["shrink"] == pytest.approx(measured["shrink"], abs=1e-5)
    trajectory = record["gamma_trajectory"]
    assert [p["step"] for p in trajectory] == [1, 2]
    assert all(p["step_ratio_inner"] > 0 and p["gamma_rms_last"] > 0 for p in trajectory)


def test_horizon_mechanism_ratios_and_plot(tmp_path, capsys):
    mech = load(os.path.join("reports", "horizon_mechanism"))
    runs = tmp_path / "runs"
    runs.mkdir()
    # none: RMS 1.0 and effective step 1e-3 throughout; guidelines: RMS 0.5 and step 4e-3 — by hand, the step
    # ratio is 4 and (1.0 / 0.5)² predicts 4.
    for entry, rms, step in (("none", 1.0, 1e-3), ("guidelines", 0.5, 4e-3)):
        trajectory = [{"step": s, **{f"gamma_rms_{c}": rms for c in mech.CATEGORIES},
                       **{f"step_ratio_{c}": step for c in mech.CATEGORIES}} for s in range(100, 7300, 100)]
        (runs / f"{entry}-seed0.json").write_text(json.dumps({"gamma_trajectory": trajectory}))
    out = tmp_path / "m.png"
    assert mech.main(["--runs", str(runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inner     effective step 4.00   predicted 4.00" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (runs / "none-seed0.json").unlink()
    assert mech.main(["--runs", str(runs), "--out", str(out)]) == 2
