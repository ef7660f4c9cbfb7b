"""`hf-gammareg`: see which γ a policy decays (``inspect``) and how γ norms moved (``plot``).

    hf-gammareg inspect bert-base-uncased                         # embedded config, offline
    hf-gammareg inspect ./my-model --task sequence-classification # a local model directory (config only)
    hf-gammareg inspect gpt2 --include ln_f --exclude 'h\\.0\\.'     # options anywhere, one regex per flag
    hf-gammareg inspect gpt2 --json > roles.json
    hf-gammareg plot runs/sst2-guidelines runs/sst2-hf-default --out gamma.png
    hf-gammareg plot --sweep results/sst2_cpu.csv --baseline hf-default --out sst2_cpu.png
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import sys
import textwrap
from importlib import resources

from .config import GammaConfigError, GammaRegConfig, option_fields, option_help
from .decision import Decisions, decide, decision_summary, decision_table
from .patterns import unmatched_pattern_notices
from .tables import text_table

_EMBEDDED_DIR = "configs"
# --task: the head decides roles (docs/design.md: "the head is whatever the model outputs"), so `inspect`
# builds the class a user would train, chosen through the Auto class of that task.
TASKS = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "image-classification": "AutoModelForImageClassification",
}
_HUB_TIMEOUT_S = 10  # one HEAD request for config.json; HF's own etag timeout is also 10 s
_OFFLINE_HINT = ("On a machine without network set HF_HUB_OFFLINE=1: config files already in the Hub cache are then "
                 "used without trying the network. An embedded config name or a local model directory needs neither.")


def embedded_configs() -> list[str]:
    """Names of the model configs shipped with the package (usable offline)."""
    files = resources.files("hf_gammareg").joinpath(_EMBEDDED_DIR).iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


def _not_found(name: str, why: str) -> LookupError:
    return LookupError(f"cannot load a config for {name!r}: not an embedded config ({', '.join(embedded_configs())}), "
                       f"not a local model directory, and {why}")


def _hub_config(name: str):
    """``name``'s config from the Hub, failing fast when the Hub cannot be reached.

    `huggingface_hub` retries a failed metadata request five times with backoff (about 25 s) before it
    falls back to the cache. One request without retries tells a missing network apart first.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, is_offline_mode, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id
    from transformers import AutoConfig

    def first_line(exc: BaseException) -> str:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _not_found(name, "not a valid Hub repo id") from None
    if is_offline_mode():  # cache only: transformers does not touch the network
        try:
            return AutoConfig.from_pretrained(name)
        except (OSError, ValueError):
            raise _not_found(name, "HF_HUB_OFFLINE is set and its config.json is not in the local Hub cache "
                                   "(unset HF_HUB_OFFLINE on a machine with network to download it)") from None
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=_HUB_TIMEOUT_S)
    except HfHubHTTPError as exc:  # the Hub answered: no such repo, gated, no config.json, …
        raise _not_found(name, f"the Hub has no config.json for it ({first_line(exc)})") from None
    except Exception as exc:  # no answer: DNS, refused connection, timeout, proxy
        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise LookupError(f"cannot load a config for {name!r}: the Hub cannot be reached ({first_line(exc)}) and "
                              f"its config.json is not in the local cache. {_OFFLINE_HINT}") from None
        return AutoConfig.from_pretrained(name, local_files_only=True)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise _not_found(name, f"not loadable from the Hub ({first_line(exc)})") from None


def load_config(name: str):
    """An HF config from an embedded name, a local directory, or a Hub id (config file only)."""
    from transformers import AutoConfig

    if name in embedded_configs():
        data = json.loads(resources.files("hf_gammareg").joinpath(_EMBEDDED_DIR, f"{name}.json").read_text())
        data.pop("_comment", None)
        model_type = data.pop("model_type")
        return AutoConfig.for_model(model_type, **data)
    if os.path.isdir(name):
        try:
            return AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise LookupError(f"cannot load a config from the directory {name!r}: {str(exc).splitlines()[0]}") from None
    return _hub_config(name)


def build_meta_model(name: str, task: str | None = None):
    """Instantiate ``name``'s architecture on the meta device: no weights, no memory.

    ``task`` (a key of `TASKS`) picks the head through its Auto class; without it, the config's own
    ``architectures`` entry decides, else the base model.
    """
    import torch
    import transformers

    config = load_config(name)
    if task is not None:
        auto = getattr(transformers, TASKS[task])
        with torch.device("meta"):
            try:
                return auto.from_config(config)
            except ValueError as exc:  # no such head for this architecture
                raise LookupError(f"{name!r} ({type(config).__name__}) has no {task} head in transformers "
                                  f"{transformers.__version__} ({str(exc).strip().splitlines()[0]})") from None
    archs = getattr(config, "architectures", None) or []
    cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
    with torch.device("meta"):
        if cls is not None:
            return cls(config)
        return transformers.AutoModel.from_config(config)


# -- the table --------------------------------------------------------------------------------------------
def _common_prefix(names: list[str]) -> str:
    """The dotted components all names share, with the trailing dot (``"bert."``); every name keeps ≥ 2 parts."""
    split = [n.split(".") for n in names]
    prefix = []
    for parts in zip(*split):
        if len(set(parts)) != 1 or any(len(s) <= len(prefix) + 2 for s in split):
            break
        prefix.append(parts[0])
    return "".join(p + "." for p in prefix)


def format_table(decisions: Decisions, *, width: int | None = None) -> str:
    """The decision table and summary (:func:`~hf_gammareg.decision.decision_table`), fitted to ``width`` columns.

    When the full table is wider, names are shortened without losing what tells them apart (the
    prefix every γ shares and the ``.weight`` suffix are dropped, and said so once), and each reason
    moves under its row, wrapped at words, at most two lines. Names are never broken mid-word.
    """
    full, summary = decision_table(decisions), decision_summary(decisions)
    if width is None or max(map(len, full.splitlines())) <= width:
        return full + "\n" + summary
    report = decisions.report
    gammas = report.gammas
    prefix = _common_prefix(gammas)
    names = [n[len(prefix):].removesuffix(".weight") for n in gammas]
    rows = [(short, d.norm, d.role, d.decision_text) for d, short in zip(decisions, names)]
    header = ("parameter", "norm", "role", "decay")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    budget = width - sum(widths[1:]) - 6
    if widths[0] > budget >= 20:
        # Still too wide: keep the end of each name (module and layer index), unless that makes two alike.
        cut = [s if len(s) <= budget else "…" + s[-(budget - 1):] for s in names]
        if len(set(cut)) == len(cut):
            rows = [(c, *r[1:]) for c, r in zip(cut, rows)]
            widths[0] = budget
    table = text_table(header, rows, free_last=False)
    lines = table[:2]
    for d, row_line in zip(decisions, table[2:]):
        lines.append(row_line)
        lines += textwrap.wrap(d.reason, max(width - 4, 20), initial_indent="    ",
                               subsequent_indent="    ", max_lines=2, placeholder=" …", break_long_words=False,
                               break_on_hyphens=False)
    shortened = [f"the prefix `{prefix}`" if prefix else "", "`.weight`" if any(n.endswith(".weight") for n in gammas)
                 else ""]
    note = " and ".join(s for s in shortened if s)
    lines += textwrap.wrap(summary, width, break_long_words=False)
    lines += textwrap.wrap(f"({'names without ' + note + '; ' if note else ''}reasons cut to two lines: --wide "
                           "or --json for everything)", width, break_long_words=False)
    return "\n".join(lines)


def _inspect(args) -> int:
    from .analysis import classify_gammas
    from .hf_rule import hf_default_decay_names
    from .roles import GammaAnalysisError

    try:
        config = GammaRegConfig(policy=args.policy, invariance=args.invariance, include=args.include or [],
                                exclude=args.exclude or [])
    except GammaConfigError as exc:  # the flag is named as the CLI names it
        print(f"hf-gammareg inspect: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    try:
        model = build_meta_model(args.model, task=args.task)
    except LookupError as exc:
        print(f"hf-gammareg: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - transformers could not build this architecture from its config
        print(f"hf-gammareg: transformers cannot build {args.model!r}"
              f"{f' with a {args.task} head' if args.task else ''} "
              f"from its config ({type(exc).__name__}: {_first_line(exc)}); try another --task or a local model "
              "directory whose config.json builds", file=sys.stderr)
        return 2
    try:
        horizon = _planned_horizon(args)
    except _UsageError as exc:
        print(f"hf-gammareg inspect: {exc}", file=sys.stderr)
        return 2
    try:
        report = classify_gammas(model, invariance=config.invariance)
    except GammaAnalysisError as exc:
        # `inspect` has only dummy inputs; a model that needs real ones is classified in Python.
        print(f"hf-gammareg: {type(model).__name__}'s forward does not run on the dummy inputs inspect builds "
              f"({exc.errors[-1] if getattr(exc, 'errors', None) else _first_line(exc).split(';')[0]}); classify "
              "it in Python from one real batch: classify_gammas(model, inputs=batch).to_table()", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback; the analysis should not fail this way
        print(f"hf-gammareg: the analysis of {type(model).__name__} failed ({type(exc).__name__}: {_first_line(exc)}); "
              "this is a bug in hf_gammareg: please report it with this line", file=sys.stderr)
        return 2
    decisions = decide(report, config, hf_default_decay_names(model))  # the model is at hand: its HF rule
    if args.json:
        print(json.dumps(_inspect_json(decisions, horizon), indent=2))
        return 0
    _print_inspect(args, decisions, horizon)
    return 0


def _inspect_json(decisions: Decisions, horizon) -> dict:
    """``inspect --json``: the report's fields, what the HF rule decays (``hf_default``, where reports before 0.2
    held it), the policy and what it decays, and the planned horizon."""
    data = {}
    for key, value in decisions.report.to_dict().items():
        data[key] = value
        if key == "untracked":
            data["hf_default"] = sorted(decisions.hf_decayed or ())
    data["policy"] = decisions.policy
    data["decayed"] = sorted(decisions.decayed)
    if horizon is not None:
        data["decay_horizon"] = horizon.to_dict()
    return data


def _print_inspect(args, decisions: Decisions, horizon) -> None:
    """``inspect``'s text: the table fitted to the terminal, the unmatched patterns, the planned horizon."""
    width = args.width
    if width is None and not args.wide and sys.stdout.isatty():
        width = shutil.get_terminal_size().columns
    print(format_table(decisions, width=None if args.wide else width))
    report = decisions.report
    for notice in unmatched_pattern_notices(report.gammas, args.include or [], args.exclude or [],
                                            include_arg="--include", exclude_arg="--exclude"):
        print(f"! {notice}")
    if horizon is not None:
        from .horizon import horizon_lines

        decayed = decisions.decayed
        line, notice = horizon_lines(horizon, len(decayed),
                                     offsets_decayed=[c for n, c in report.offsets.items() if n in decayed],
                                     offsets_kept=[c for n, c in report.offsets.items() if n not in decayed])
        print(line + "\n" + (f"! {notice}" if notice else ""), end="\n" if notice else "")


class _UsageError(Exception):
    """A flag combination `inspect` refuses; the message is the line it prints."""


def _planned_horizon(args):
    """The decay horizon the --lr/--weight-decay/--steps flags plan (``None`` without them)."""
    planned = [args.lr, args.weight_decay, args.steps]
    if all(v is None for v in planned):
        return None
    if any(v is None for v in planned):
        raise _UsageError("a decay horizon needs --lr, --weight-decay and --steps together "
                          "(e.g. --lr 2e-5 --weight-decay 0.01 --steps 6000)")
    from .horizon import planned_decay_horizon

    try:
        return planned_decay_horizon(lr=args.lr, weight_decay=args.weight_decay, num_steps=args.steps,
                                     optimizer=args.optimizer, momentum=args.momentum, nesterov=args.nesterov,
                                     schedule=args.schedule,
                                     warmup=float(args.warmup) if args.warmup < 1 else int(args.warmup))
    except (TypeError, ValueError) as exc:
        flag = "--steps" if "num_steps" in str(exc) else "the horizon flags"
        raise _UsageError(f"{flag}: {exc}") from None


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__


def _plot(args) -> int:
    if bool(args.run_dirs) == bool(args.sweep):
        print("hf-gammareg plot: give run directories (γ-norm curves) or --sweep CSV (a sweep's bar chart), "
              "not both and not neither", file=sys.stderr)
        return 2
    try:
        if args.sweep:
            from .sweeps import plot_sweep

            out = args.out or os.path.splitext(args.sweep)[0] + ".png"
            out = plot_sweep(args.sweep, out, metric=args.metric, baseline=args.baseline, title=args.title)
        else:
            from .callbacks import plot_history

            out = plot_history(args.run_dirs, args.out or "gamma_norms.png", stat=args.stat, title=args.title)
    except ImportError as exc:  # matplotlib missing: the message names the extra
        print(f"hf-gammareg: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"hf-gammareg: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped flag or subcommand (exit status 2, one line)."""

    def error(self, message: str):
        words = re.findall(r"(--?[\w-]+)", message.partition(":")[2]) if "unrecognized" in message else []
        known = [opt for a in self._actions for opt in a.option_strings]
        for sub in (a for a in self._actions if isinstance(a, argparse._SubParsersAction)):
            known += list(sub.choices)
            for p in sub.choices.values():
                known += [opt for a in p._actions for opt in a.option_strings]
        hints = [f"{w} → {c[0]}" for w in words if (c := difflib.get_close_matches(w, known, n=1))]
        if "invalid choice" in message:
            choice = re.search(r"invalid choice: '([^']*)'", message)
            options = re.findall(r"'([^']*)'", message.partition("choose from")[2])
            close = difflib.get_close_matches(choice.group(1), options, n=1) if choice else []
            hints += [f"{choice.group(1)} → {close[0]}"] if close else []
        self.exit(2, f"{self.prog}: error: {message}" + (f" (did you mean: {', '.join(hints)}?)" if hints else "")
                  + "\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-gammareg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="print the role of every γ of a model and what a policy decays")
    p.add_argument("model", help=f"embedded config ({', '.join(embedded_configs())}), local model dir, or Hub id")
    p.add_argument("--task", choices=list(TASKS),
                   help="the head to build (it changes roles: the final norm is `head` under a classifier, "
                        "`invariant` under BERT's MLM head); default: the config's `architectures`, else base")
    # The γ options, from GammaRegConfig's declaration (those with a `cli` entry: --policy, --invariance, --include,
    # --exclude). A list option takes one regex per flag (repeat the flag): a comma-split list would break
    # regexes such as `h\.{1,3}`.
    for f in option_fields():
        if f.metadata["cli"] is None:
            continue
        kwargs = {"help": option_help(f), **f.metadata["cli"]}
        if kwargs.get("action") == "append":
            kwargs["help"] += " (repeatable: one regex per flag)"
        if f.metadata["choices"]:
            kwargs["choices"] = list(f.metadata["choices"])
        p.add_argument(f"--{f.name}", **kwargs)
    p.add_argument("--json", action="store_true", help="machine-readable output (GammaReport JSON + decayed)")
    p.add_argument("--width", type=int, metavar="COLUMNS",
                   help="fit the table to this many columns (default: the terminal's width when printing to one)")
    p.add_argument("--wide", action="store_true", help="never shorten names or reasons")
    from .horizon import planned_optimizers

    h = p.add_argument_group("decay horizon of a planned run (what weight decay alone does to the decayed γ)")
    h.add_argument("--lr", type=float, help="peak learning rate")
    h.add_argument("--weight-decay", type=float, help="the decayed γ's weight decay λ")
    h.add_argument("--steps", type=int, help="optimizer steps of the run")
    h.add_argument("--optimizer", default="adamw", choices=sorted(planned_optimizers()),
                   help="the optimizer's decay: adamw decoupled, sgd coupled L2 (default: adamw)")
    h.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    h.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    h.add_argument("--schedule", default="linear",
                   help="a transformers schedule: linear, cosine, constant, constant_with_warmup, … (default linear)")
    h.add_argument("--warmup", type=float, default=0,
                   help="warm-up steps (a value < 1: that fraction of --steps, as TrainingArguments.warmup_steps)")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("plot", help="plot γ-norm trajectories per role from run dirs, or a sweep CSV as bars")
    p.add_argument("run_dirs", nargs="*", help="output_dir(s) holding gamma_history.jsonl")
    p.add_argument("--out", help="PNG to write (default: gamma_norms.png; with --sweep, the CSV's name with .png)")
    p.add_argument("--stat", default="norm", choices=("norm", "abs_mean"), help="mean ‖γ‖ or mean |γ|")
    p.add_argument("--sweep", metavar="CSV", help="a results CSV of recipes/sweep.py: the metric per entry as bars")
    p.add_argument("--baseline", metavar="ENTRY", help="with --sweep: add the paired difference to this entry")
    p.add_argument("--metric", help="with --sweep: the column to plot (default: the primary metric)")
    p.add_argument("--title", help="a title above the panels")
    p.set_defaults(func=_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad policy or regex
        print(f"hf-gammareg: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hf-gammareg inspect … | head` closed the pipe: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
