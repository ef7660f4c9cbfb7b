"""The package's layering: what the Trainer-free path imports."""

import subprocess
import sys


def test_param_groups_imports_no_trainer_and_no_training_arguments():
    code = (
        "import sys\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "from hf_gammareg import param_groups, decay_plan, decay_horizon\n"
        "import torch\n"
        "m = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, "
        "bos_token_id=0, eos_token_id=0))\n"
        "groups = param_groups(m, 0.1)\n"
        "plan = decay_plan(m, 0.1)\n"
        "opt = torch.optim.AdamW(groups, lr=1e-3)\n"
        "print(plan.to_table(m, opt, num_steps=10))\n"
        "loaded = sorted(k for k in sys.modules if k in ('transformers.trainer', 'transformers.training_args',"
        " 'transformers.training_args_seq2seq', 'hf_gammareg.trainer', 'hf_gammareg.training_args'))\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "decay horizon:" in out  # the path ran to the end
    assert out.strip().splitlines()[-1] == "LOADED []"
