"""Launched by tests/test_scale_out.py: 2 processes, FSDP1 (``use_orig_params=True``) over gloo on CPU.

    torchrun --nproc_per_node 2 tests/scripts/fsdp_train.py OUT_DIR

Why not through `Trainer(fsdp=...)`: accelerate 1.15 enables FSDP only for GPU-like distributed
types, so on a CPU machine the Trainer silently runs DDP. This script therefore wraps the model
itself, exactly as accelerate does for FSDP1 (each GPT-2 block auto-wrapped, so parameter names
carry ``_fsdp_wrapped_module.`` at the root and inside every block), and then makes the very call
HF's Trainer makes under FSDP1, which delays optimizer creation until after wrapping:
``trainer.create_optimizer(fsdp_model)``. It then trains 2 steps. Every rank writes
``OUT_DIR/rank<r>.json`` with the roles (classified before wrapping), the γ in each weight-decay
group, and whether the same call on a model wrapped *without* ``use_orig_params`` is refused.
"""

import functools
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/models.py
from models import tiny_gpt2  # noqa: E402

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments  # noqa: E402


def _wrap(model, use_orig_params):
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={GPT2Block})
    return FSDP(model, auto_wrap_policy=policy, use_orig_params=use_orig_params, device_id=torch.device("cpu"))


def main(out_dir: str) -> int:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = tiny_gpt2()
    args = GammaRegTrainingArguments(output_dir=os.path.join(out_dir, "run"), report_to="none", use_cpu=True,
                                     weight_decay=0.05, gamma_log_norms=False, learning_rate=1e-2)
    trainer = GammaRegTrainer(model=model, args=args)
    from hf_gammareg import classify_gammas

    trainer.gamma_report = classify_gammas(model)  # what GammaRegTrainer.train does before wrapping
    fsdp_model = _wrap(model, use_orig_params=True)
    optimizer = trainer.create_optimizer(fsdp_model)
    names = {id(p): n for n, p in fsdp_model.named_parameters()}
    groups = [[g["weight_decay"], sorted(names[id(p)] for p in g["params"])] for g in optimizer.param_groups]
    ids = torch.randint(0, 64, (4, 6), generator=torch.Generator().manual_seed(rank))
    for _ in range(2):
        loss = fsdp_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    refused = None
    flat = _wrap(tiny_gpt2(), use_orig_params=False)
    plain = GammaRegTrainer(model=tiny_gpt2(), args=args)
    plain.gamma_report = trainer.gamma_report
    try:
        plain.create_optimizer(flat)
    except ValueError as exc:
        refused = str(exc)
    record = {"rank": rank, "world_size": dist.get_world_size(), "roles": trainer.gamma_report.roles,
              "decayed": sorted(trainer.gamma_plan.decayed), "groups": groups, "loss": loss.item(),
              "refused_without_orig_params": refused}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
