"""Where `GammaRegTrainer`'s table shows: wherever `Trainer`'s own INFO lines do (transformers' logging).

tests/scripts/example_script_logging.py sets logging up exactly as transformers' example scripts do (`basicConfig`,
`set_verbosity(training_args.get_process_log_level())`, the default handler, the explicit format) and adds nothing
for hf_gammareg; the expectations are the issue's: the table and its horizon line once at INFO, nothing but the
notices that name a fix at WARNING, on the main process only.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_scale_out import _free_port, run_launcher

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "scripts" / "example_script_logging.py"
TABLE = "hf_gammareg: γ weight decay of this optimizer — policy 'guidelines'"
HORIZON = "decay horizon: weight decay alone shrinks the 4 decayed γ"
RUNNING = "***** Running training *****"
NOTICE = "hf_gammareg: ! gamma_include pattern 'ln_ff' matches no γ"


def run_script(tmp_path, *flags) -> str:
    cmd = [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
           "--per_device_train_batch_size", "4", "--weight_decay", "0.05", "--report_to", "none",
           "--save_strategy", "no", "--disable_tqdm", "true", *flags]
    # transformers lets its loggers propagate to Python's root logger when CI is set (utils/logging.py), which
    # doubles every line under the example scripts' basicConfig; a user's shell has no CI variable.
    env = {**{k: v for k, v in os.environ.items() if k != "CI"}, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("flags,shown", [
    # the example scripts' default (transformers at INFO on the main process): the table, its horizon line, then
    # the notice that names a fix, at WARNING
    (("--gamma_include", "ln_ff"), {TABLE: 1, HORIZON: 1, RUNNING: 1, NOTICE: 1}),
    # --log_level warning: Trainer's INFO lines are gone, and the table with them; the notice alone stays
    (("--log_level", "warning", "--gamma_include", "ln_ff"), {TABLE: 0, HORIZON: 0, RUNNING: 0, NOTICE: 1}),
])
def test_example_script_logging_shows_the_table_with_trainers_lines(tmp_path, flags, shown):
    out = run_script(tmp_path, *flags)
    assert {line: out.count(line) for line in shown} == shown, out[-4000:]
    lines = out.splitlines()
    # in transformers' explicit format, like Trainer's own lines: "[LEVEL|file:line] date >> message"
    assert all(line.startswith("[WARNING|") for line in lines if NOTICE in line)
    assert all(line.startswith("[INFO|") for line in lines if TABLE in line)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_print_the_table_once_even_with_replicas_at_info(tmp_path):
    # the README's CPU multi-process command, through the accelerate config shipped with the recipes
    proc = run_launcher([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                         str(REPO / "recipes" / "configs" / "accelerate_cpu_2proc.yaml"),
                         "--main_process_port", str(_free_port()), str(SCRIPT),
                         "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--max_steps", "2",
                         "--per_device_train_batch_size", "4", "--weight_decay", "0.05", "--report_to", "none",
                         "--save_strategy", "no", "--disable_tqdm", "true", "--log_level_replica", "info"])
    out = proc.stdout + proc.stderr
    # one run over two processes (4 a process, 8 in all), not two runs side by side
    assert out.count("Total train batch size (w. parallel, distributed & accumulation) = 8") == 2
    assert out.count(RUNNING) == 2  # Trainer's own line: both processes log at INFO
    assert out.count(TABLE) == 1 and out.count(HORIZON) == 1  # the table: the main process only
