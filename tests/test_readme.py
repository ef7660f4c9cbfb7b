"""The README's Quick Start, run verbatim as a file would run it: it trains and prints the trainer's own γ table."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def quick_start_code() -> str:
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Quick start"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_quick_start_verbatim_prints_the_trainers_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the snippet writes to output_dir="out"
    code = quick_start_code()
    assert "print(trainer.gamma_table())" in code
    exec(compile(code, "README.md (Quick start)", "exec"), {})  # self-contained: nothing defined for it
    out = capsys.readouterr().out
    assert "γ weight decay of this optimizer — policy 'guidelines', invariance exact" in out
    # GPT-2 (docs/design.md): ln_1/ln_2 are branch γ, decayed at weight_decay=0.01 by guidelines; ln_f is head, kept.
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines() if line.startswith("transformer.")}
    assert rows["transformer.h.0.ln_1.weight"] == ["branch", "yes", "0.01"]
    assert rows["transformer.ln_f.weight"] == ["head", "no", "0"]
    assert "4 of 5 γ decayed" in out
    # the Quick start's promise: no extra argument, the roles come from the first training batch
    assert "Roles read from the first batch of the training data" in out


def test_quick_start_says_where_the_roles_come_from():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Quick start"):text.index("## Without a Trainer")]
    assert "reads them from the first batch of your own `train_dataset`" in section
    assert "with no extra argument" in section
