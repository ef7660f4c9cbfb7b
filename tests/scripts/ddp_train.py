"""Launched by tests/test_scale_out.py: 2 processes, DDP over gloo on CPU (`accelerate launch`, see below).

    accelerate launch --multi_gpu --num_processes 2 tests/scripts/ddp_train.py OUT_DIR

On a machine without GPUs the script's ``use_cpu=True`` makes accelerate use DDP over gloo. (With
accelerate 1.15, ``--cpu --num_processes 2`` starts a *single* process: multi-CPU launching there
goes through MPI, so the test uses ``--multi_gpu``, which launches through torchrun.)

Every rank trains a tiny GPT-2 for 3 steps with `GammaRegTrainer` and writes ``OUT_DIR/rank<r>.json``:
its decayed γ names, its optimizer's param-group layout ``[(weight_decay, [names])]``, the plan
mapped onto the DDP-wrapped model (``module.`` names), and a checksum of the trained weights.
Rank 0 alone writes the checkpoint (``OUT_DIR/run/checkpoint-3``). Then every rank trains `Conditioned`
(``forward(features, condition, labels)``: no dummy batch fits it) with gradient accumulation 2, its roles read
from the first training batch, and records those roles, where they came from, and a checksum.
"""

import json
import os
import sys

import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/models.py
from models import Conditioned, tiny_gpt2  # noqa: E402

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments  # noqa: E402
from hf_gammareg.plan import decay_plan  # noqa: E402


class Sentences(Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, 6), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Conditions(Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x, self.c = torch.randn(n, 6, generator=g), torch.randn(n, 3, generator=g)
        self.y = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "condition": self.c[i], "labels": self.y[i]}


def main(out_dir: str) -> int:
    torch.manual_seed(0)
    model = tiny_gpt2()
    args = GammaRegTrainingArguments(
        output_dir=os.path.join(out_dir, "run"), report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.05,
        gamma_weight_decay=0.2, save_strategy="steps", save_steps=3, logging_strategy="no",
    )
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Sentences())
    trainer.train()
    rank = trainer.args.process_index
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[g["weight_decay"], sorted(names[id(p)] for p in g["params"])] for g in trainer.optimizer.param_groups]
    wrapped = trainer.model_wrapped
    wrapped_plan = decay_plan(wrapped, args.weight_decay, trainer.gamma_config, report=trainer.gamma_report)
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    record = {
        "rank": rank, "world_size": trainer.args.world_size, "should_save": trainer.args.should_save,
        "wrapped_type": type(wrapped).__name__,
        "decayed": sorted(trainer.gamma_plan.decayed), "groups": groups,
        "wrapped_decayed": sorted(wrapped_plan.decayed), "roles": trainer.gamma_report.roles,
        "checksum": checksum,
    }
    torch.manual_seed(0)
    model = Conditioned()
    args = GammaRegTrainingArguments(
        output_dir=os.path.join(out_dir, "cond"), report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2,
        weight_decay=0.05, save_strategy="no", logging_strategy="no",
    )
    trainer = GammaRegTrainer(model=model, args=args, train_dataset=Conditions())
    trainer.train()
    names = {id(p): n for n, p in model.named_parameters()}
    record.update(
        cond_roles=trainer.gamma_report.roles, cond_source=trainer.gamma_report.inputs_source,
        cond_groups=[[g["weight_decay"], sorted(names[id(p)] for p in g["params"])]
                     for g in trainer.optimizer.param_groups],
        cond_checksum=sum(p.detach().double().sum().item() for p in model.parameters()),
    )
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
