"""The language-model pretraining recipe: --help, a few steps on a tiny random GPT-2 and a tiny text file, the γ
weight decay in its optimizer per policy (written out by hand from docs/design.md), the data helpers, and bad input."""

import hashlib
import json
import os

import pytest
import torch
from conftest import load_recipe

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
WD = 0.1
# GPT-2 is pre-LN (docs/design.md § Reference classifications): every ln_1, ln_2 → branch, ln_f → head.
LN = {f"transformer.h.{i}.{n}.weight" for i in (0, 1) for n in ("ln_1", "ln_2")}
LN_F = "transformer.ln_f.weight"
DECAY = {  # policy -> the weight decay each γ gets in the optimizer, by hand
    "hf-default": {**dict.fromkeys(LN, 0.0), LN_F: 0.0},  # Trainer never decays a LayerNorm
    "guidelines": {**dict.fromkeys(LN, WD), LN_F: 0.0},  # branch decayed, head spared
    "only:head": {**dict.fromkeys(LN, 0.0), LN_F: WD},
    "all": {**dict.fromkeys(LN, WD), LN_F: WD},
}
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


def load():
    return load_recipe("lm_pretrain")


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def tiny_argv(text_file, out, policy):
    return ["--text_file", str(text_file), "--block_size", "16", "--n_layer", "2", "--n_head", "2", "--n_embd", "16",
            "--dropout", "0.0", "--max_steps", "3", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--weight_decay", str(WD),
            "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
            "--output_dir", str(out), "--gamma_policy", policy]


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        load().main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--gamma_policy" in out and "--block_size" in out and "--text_file" in out


@pytest.mark.parametrize("policy", sorted(DECAY))
def test_policy_reaches_the_optimizer(text_file, tmp_path, policy):
    out = tmp_path / "run"
    assert load().main(tiny_argv(text_file, out, policy)) == 0
    record = json.loads((out / "results.json").read_text())
    decay = {name: g["optimizer_weight_decay"] for name, g in record["gamma"]["gammas"].items()}
    assert decay == DECAY[policy]
    assert record["metrics"]["val_loss"] > 0 and record["metrics"]["perplexity"] > 1
    assert record["tokens_per_s"] > 0 and set(record["table_columns"]) >= {"tokens_per_s", "gamma_rms_branch"}
    assert record["vocab_size"] == len(set(TEXT))


def test_char_tokenizer_round_trip_and_split(tmp_path):
    lm = load()
    tok = lm.CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]  # sorted, as nanoGPT's prepare.py
    assert tok.decode(tok.encode("world hello")) == "world hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("hi!")
    path = tok.save(str(tmp_path))
    assert json.loads(open(path, encoding="utf-8").read())["chars"] == tok.chars
    train, val = lm.split_text("abcdefghij" * 10, 0.9, block_size=4)
    assert (len(train), len(val)) == (90, 10) and train + val == "abcdefghij" * 10  # first 90 %, last 10 %


def test_windows_are_pinned_by_the_seed():
    lm = load()
    ids = torch.arange(100)
    a, b, c = (lm.RandomWindows(ids, 8, 5, seed) for seed in (0, 0, 1))
    assert [a[i]["input_ids"].tolist() for i in range(5)] == [b[i]["input_ids"].tolist() for i in range(5)]
    assert [a[i]["input_ids"].tolist() for i in range(5)] != [c[i]["input_ids"].tolist() for i in range(5)]
    assert all(len(a[i]["input_ids"]) == 8 and torch.equal(a[i]["input_ids"], a[i]["labels"]) for i in range(5))
    windows = lm.ConsecutiveWindows(ids, 8)
    assert len(windows) == 12 and windows[1]["input_ids"].tolist() == list(range(8, 16))


def test_unigram_reference():
    lm = load()
    assert lm.unigram_loss("ab" * 50, "ab" * 5) == pytest.approx(-__import__("math").log(51 / 102))


def test_bad_input_fails_before_training(tmp_path, text_file, capsys):
    lm = load()
    with pytest.raises(FileNotFoundError, match="--text_file"):
        lm.main(tiny_argv(tmp_path / "missing.txt", tmp_path / "a", "guidelines"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        lm.main(tiny_argv(empty, tmp_path / "b", "guidelines"))
    with pytest.raises(ValueError, match="fewer than one context window"):
        lm.main(tiny_argv(text_file, tmp_path / "c", "guidelines") + ["--block_size", "1000"])
    # An argument the recipe refuses ends it with exit status 2 and one line naming the argument.
    with pytest.raises(SystemExit) as exit_:
        lm.main(tiny_argv(text_file, tmp_path / "d", "decay-everything"))
    assert exit_.value.code == 2 and "gamma_policy" in capsys.readouterr().err
    assert not any((tmp_path / d / "results.json").exists() for d in "abcd")


# -- the corpus a run does not repeat, and the horizon config ------------------------------------------------
def fake_stdlib(root):
    """A small standard-library-shaped tree: modules, a package, test suites and build files to be left out."""
    files = {
        "abc.py": "class ABC:\n    pass\n", "argparse.py": "def parse(args):\n    return args\n",
        "json/__init__.py": "from .decoder import decode\n", "json/decoder.py": "def decode(s):\n    return s\n",
        "email/message.py": "class Message:\n    body = ''\n", "os.py": "sep = '/'\n",
        "re.py": "def match(p, s): ...\n",
        "empty/__init__.py": "",  # no characters: skipped
        # left out: test suites, installed packages, the build's config and sysconfig data
        "test/test_abc.py": "TEST\n", "unittest/test/test_case.py": "TEST\n", "idlelib/idle_test/x.py": "TEST\n",
        "test_top.py": "TEST\n", "site-packages/pkg.py": "TEST\n", "config-3.11-x86_64-linux-gnu/python-config.py":
        "TEST\n", "_sysconfigdata__linux_x86_64-linux-gnu.py": "TEST\n", "notes.txt": "TEST\n",
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


def test_stdlib_files_leave_out_tests_packages_and_build_files(tmp_path):
    lm = load()
    assert lm.stdlib_files(str(fake_stdlib(tmp_path))) == [
        "abc.py", "argparse.py", "email/message.py", "empty/__init__.py", "json/__init__.py", "json/decoder.py",
        "os.py", "re.py"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lm.stdlib_files(str(tmp_path / "nowhere"))


def test_stdlib_corpus_is_deterministic_and_splits_by_file():
    lm = load()
    train, val, record = lm.python_stdlib_corpus(0.9)
    again = lm.python_stdlib_corpus(0.9)
    assert again[2]["sha256"] == record["sha256"] and (again[0], again[1]) == (train, val)
    assert record["sha256"] == hashlib.sha256((train + val).encode("utf-8")).hexdigest()
    assert record["val_sha256"] == hashlib.sha256(val.encode("utf-8")).hexdigest()
    assert (record["n_train_chars"], record["n_val_chars"]) == (len(train), len(val))
    assert record["n_chars"] >= 8_000_000  # the bar: ≥ 8 M characters on every machine
    assert record["n_files"] == record["n_train_files"] + record["n_val_files"]
    # No file is in both splits: every validation file's text is absent from the training text, and the
    # hash rule puts each file on one side only.
    files = lm.stdlib_files()
    val_files = set(record["val_files"])
    assert val_files and val_files < set(files)
    assert all(lm.is_validation_file(f, 0.9) == (f in val_files) for f in files)
    root = __import__("sysconfig").get_paths()["stdlib"]
    big = max(val_files, key=lambda f: os.path.getsize(os.path.join(root, f)))
    with open(os.path.join(root, big), encoding="utf-8", errors="replace") as f:
        assert f.read() not in train
    assert not any(f.split("/")[0] in ("test", "site-packages") or "/test/" in f for f in files)


def test_horizon_config_reaches_sigma_3_in_one_pass():
    from hf_gammareg.horizon import planned_decay_horizon

    lm = load()
    config = os.path.join(RECIPES, "configs", "lm_horizon_cpu.yaml")
    args, targs = lm.parse_args(lm.make_parser(), [config, "--output_dir", "unused"])
    assert args.text_source == "python-stdlib" and (targs.optim, targs.weight_decay) == ("adamw_torch", 0.1)
    h = planned_decay_horizon(targs, num_steps=targs.max_steps, weight_decay=targs.weight_decay)
    # By hand (the config's comment): 0.1 · 2e-3 · (200/2 + 14,000 + 2,800/2) = 3.10
    assert h.decay == "decoupled" and h.integral >= 3
    assert h.integral == pytest.approx(3.10, abs=0.01) and h.shrink < 0.05
    _, _, corpus = lm.python_stdlib_corpus(args.train_fraction)
    passes = targs.max_steps * targs.per_device_train_batch_size * args.block_size / corpus["n_train_chars"]
    assert passes <= 1.5
    gpu = os.path.join(RECIPES, "configs", "lm_horizon_gpu.yaml")
    gargs, gtargs = lm.parse_args(lm.make_parser(), [gpu, "--output_dir", "unused", "--use_cpu", "--bf16", "false"])
    g = planned_decay_horizon(gtargs, num_steps=gtargs.max_steps, weight_decay=gtargs.weight_decay)
    assert gtargs.weight_decay == 0.1 and g.integral >= 3
    gpasses = gtargs.max_steps * gtargs.per_device_train_batch_size * gargs.block_size / corpus["n_train_chars"]
    assert gpasses <= 1.5


def test_three_step_run_of_the_horizon_config_records_the_corpus(tmp_path):
    lm = load()
    root = fake_stdlib(tmp_path / "lib")
    out = tmp_path / "run"
    config = os.path.join(RECIPES, "configs", "lm_horizon_cpu.yaml")
    argv = [config, "--stdlib_root", str(root), "--train_fraction", "0.6", "--block_size", "8", "--max_steps", "3",
            "--warmup_steps", "1", "--lr_scheduler_kwargs", '{"num_decay_steps": 1}', "--per_device_train_batch_size",
            "2", "--output_dir", str(out), "--disable_tqdm", "true", "--trajectory_window", "1"]
    assert lm.main(argv) == 0
    record = json.loads((out / "results.json").read_text())
    corpus = record["corpus"]
    train, val, expected = lm.python_stdlib_corpus(0.6, str(root))
    assert corpus["sha256"] == expected["sha256"] == hashlib.sha256((train + val).encode("utf-8")).hexdigest()
    assert corpus["source"] == "python-stdlib" and corpus["python"] == __import__("platform").python_version()
    assert corpus["n_files"] == 7 and corpus["n_chars"] == len(train) + len(val)  # empty __init__.py skipped
    assert record["header"] == [lm.corpus_line(corpus)] and corpus["sha256"] in record["header"][0]
    assert record["passes"] == pytest.approx(3 * 2 * 8 / len(train), abs=1e-4)
    # The measured horizon, by hand: warmup_stable_decay with 1 warm-up step (lr 0 at step 0), then 2e-3 held, and
    # the 1-step cosine decay starts at its peak (step 2 is its first): Σ lr·λ = 0.1 · (0 + 2e-3 + 2e-3) = 4e-4.
    measured = record["decay_horizon_measured"]
    assert measured["steps"] == 3 and measured["decay_horizon"] == pytest.approx(4e-4)
    assert record["table_columns"]["decay_horizon"] == measured["decay_horizon"]
    assert measured["shrink"] == pytest.approx((1 - 2e-4) ** 2, abs=1e-5)
    assert [row["step"] for row in record["gamma_trajectory"]] == [1, 2, 3]
    assert set(record["gamma_trajectory"][-1]) >= {"gamma_rms_branch", "gamma_rms_head"}
    # The report script draws the trajectory of such records.
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "guidelines-seed0.json").write_text((out / "results.json").read_text())
    report = load_recipe("reports/lm_trajectory")
    assert report.main(["--runs", str(runs), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0
    assert report.end_lines(report.load_runs(str(runs), 0))[0].startswith("guidelines: γ RMS at step 3: branch ")


def test_family_table_pairs_by_seed_and_updates_the_docs_block(tmp_path):
    table = load_recipe("reports/family_table")
    records = load_recipe("sweep_records")
    csv_path = str(tmp_path / "lm_horizon_cpu.csv")
    for label, seed, loss in (("hf-default", 0, 1.0), ("hf-default", 1, 1.1), ("guidelines", 0, 1.2),
                              ("guidelines", 1, 1.25)):
        records.append_row(csv_path, {"label": label, "entry": label, "policy": label, "seed": seed, "val_loss": loss,
                                      "primary_metric": "val_loss"}, ["command: test"] if not os.path.exists(csv_path)
                           else [])
    source = next(s for s in table.SOURCES if s.sweep == "lm_horizon_cpu")
    (row,) = table.rows([source], str(tmp_path))
    # By hand: differences 0.2 and 0.15 → mean 0.175, sd 0.03536, t(0.975, 1) = 12.706 → ± 0.3176.
    assert row[4] == "+0.175 [-0.143, +0.493] (n=2)"
    assert row[5] == "= `hf-default` (baseline)" and row[6] == "not run yet"
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{table.START}\nold\n{table.END}\nrest\n", encoding="utf-8")
    table.update_docs([str(doc)], table.compact([row]))
    text = doc.read_text(encoding="utf-8")
    assert "old" not in text and text.startswith("intro\n") and text.endswith(f"{table.END}\nrest\n")
    assert "| char GPT-2 LM | 3.10 | val loss, nats/char (− = better) | +0.175 [-0.143, +0.493] (n=2) |" in text
