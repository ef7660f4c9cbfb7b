"""Logging set up exactly as transformers' example scripts set it up, then one short `GammaRegTrainer` run.

    python tests/scripts/example_script_logging.py --output_dir OUT [--log_level warning] [--gamma_* ...]
    accelerate launch --multi_gpu --num_processes 2 tests/scripts/example_script_logging.py --output_dir OUT --use_cpu

The block between "Setup logging" and "end of the example scripts' set-up" is the one in transformers'
``examples/pytorch/text-classification/run_glue.py``, ``language-modeling/run_clm.py`` and
``translation/run_translation.py``: `basicConfig` on stdout, transformers raised to INFO on the process that
should log, then everything set to ``training_args.get_process_log_level()`` (``--log_level`` /
``--log_level_replica``) with transformers' default handler (stderr) and its explicit format. The script itself adds
no logging line of its own for hf_gammareg. Used by tests/test_logging.py.
"""

import logging
import os
import sys

import datasets
import torch
import transformers
from torch.utils.data import Dataset
from transformers import HfArgumentParser

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # tests/models.py
from models import tiny_gpt2  # noqa: E402

from hf_gammareg import GammaRegTrainer, GammaRegTrainingArguments  # noqa: E402

logger = logging.getLogger(__name__)


class Tokens(Dataset):
    def __init__(self, n=8):
        self.ids = torch.randint(0, 64, (n, 6), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main():
    parser = HfArgumentParser(GammaRegTrainingArguments)
    (training_args,) = parser.parse_args_into_dataclasses()

    # Setup logging
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )

    if training_args.should_log:
        # The default of training_args.log_level is passive, so we set log level at info here to have that default.
        transformers.utils.logging.set_verbosity_info()

    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    # (end of the example scripts' set-up)

    torch.manual_seed(0)
    trainer = GammaRegTrainer(model=tiny_gpt2(), args=training_args, train_dataset=Tokens())
    trainer.train()


if __name__ == "__main__":
    main()
