"""Launched by tests/test_param_groups.py: 2 processes, FSDP2 (``fully_shard``) over gloo on CPU.

    torchrun --nproc_per_node 2 tests/scripts/fsdp2_train.py OUT_DIR

A tiny GPT-2 (dropout off, so that runs can be compared) is classified, then sharded the way
torchtitan-style loops do it: ``fully_shard`` on each block, then on the root. Parameter names do not
change; the parameters become DTensors holding half of each tensor per rank. Then:

* decoupled: ``AdamW(param_groups(model, 0.05, report=report, gamma_weight_decay=0.2))``, 3 steps, each
  rank on its half of a fixed batch of 4 sequences. An unsharded copy of the same initial model trains
  in the same process on the whole batch with the same groups: FSDP averages the two halves' gradients,
  so the two runs take the same steps. The γ norms are logged with ``gamma_norm_stats`` for both.
* coupled L2: ``SGD(decay_plan(..., regularization="l2").param_groups(model))`` with
  ``loss + l2_penalty(model, plan)``, policy ``all`` (the root's ``ln_f`` is an unsharded tensor between
  forward and backward, the blocks' γ are DTensor shards: both paths), against the unsharded copy.

Every rank writes ``OUT_DIR/rank<r>.json``.
"""

import copy
import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/models.py
from models import tiny_gpt2

from hf_gammareg import classify_gammas, decay_plan, l2_penalty, param_groups
from hf_gammareg.callbacks import gamma_norm_stats


def shard(model, mesh):
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train(model, optimizer, ids, steps, plan=None):
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        if plan is not None:
            loss = loss + l2_penalty(model, plan)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def full(p):
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach()


def main(out_dir: str) -> int:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = tiny_gpt2(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    initial = copy.deepcopy(model)
    reference = copy.deepcopy(model)
    report = classify_gammas(model)  # before sharding
    shard(model, mesh)

    refused = None
    try:
        param_groups(model, 0.05)
    except ValueError as exc:
        refused = str(exc)

    groups = param_groups(model, 0.05, report=report, gamma_weight_decay=0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    layout = [[g["weight_decay"], sorted(names[id(p)] for p in g["params"])] for g in groups]
    gamma_types = sorted({type(p).__name__ for p in groups[2]["params"]})
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    ref_optimizer = torch.optim.AdamW(param_groups(reference, 0.05, gamma_weight_decay=0.2), lr=1e-2)

    batch = torch.randint(0, 64, (2 * world, 8), generator=torch.Generator().manual_seed(0))
    train(model, optimizer, batch[2 * rank:2 * rank + 2], 3)
    train(reference, ref_optimizer, batch, 3)
    stats, ref_stats = gamma_norm_stats(model, report), gamma_norm_stats(reference, report)
    ln_f = dict(model.named_parameters())["transformer.ln_f.weight"]
    local_norm = ln_f.to_local().float().norm().item()  # what a per-rank norm would log

    # coupled L2 on a second sharded copy
    l2_model, l2_reference = shard(copy.deepcopy(initial), mesh), copy.deepcopy(initial)
    plan = decay_plan(l2_model, 0.05, policy="all", gamma_weight_decay=0.5, regularization="l2", report=report)
    ref_plan = decay_plan(l2_reference, 0.05, policy="all", gamma_weight_decay=0.5, regularization="l2")
    train(l2_model, torch.optim.SGD(plan.param_groups(l2_model), lr=0.1), batch[2 * rank:2 * rank + 2], 3, plan)
    train(l2_reference, torch.optim.SGD(ref_plan.param_groups(l2_reference), lr=0.1), batch, 3, ref_plan)
    sharded_params, ref_params = dict(l2_model.named_parameters()), dict(l2_reference.named_parameters())
    l2_diff = {n: (full(sharded_params[n]) - ref_params[n].detach()).abs().max().item() for n in report.roles}
    l2_moved = {n: (ref_params[n].detach() - 1.0).abs().max().item() for n in report.roles}

    record = {"rank": rank, "world_size": world, "refused_without_report": refused, "groups": layout,
              "gamma_types": gamma_types, "stats": stats, "reference_stats": ref_stats,
              "ln_f_local_norm": local_norm, "l2_max_diff": l2_diff, "l2_moved": l2_moved}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
