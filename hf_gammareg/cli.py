"""`hf-gammareg`: see which γ a policy decays (``inspect``) and how γ norms moved (``plot``).

    hf-gammareg inspect bert-base-uncased              # embedded config, offline
    hf-gammareg inspect ./my-model --policy all        # a local model directory (config only)
    hf-gammareg inspect gpt2 --json > roles.json
    hf-gammareg plot runs/sst2-guidelines runs/sst2-hf-default --out gamma.png
    hf-gammareg plot --sweep results/sst2_cpu.csv --baseline hf-default --out sst2_cpu.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources

from .policy import POLICY_HELP
from .roles import INVARIANCE_MODES

_EMBEDDED_DIR = "configs"


def embedded_configs() -> list[str]:
    """Names of the model configs shipped with the package (usable offline)."""
    files = resources.files("hf_gammareg").joinpath(_EMBEDDED_DIR).iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


def load_config(name: str):
    """An HF config from an embedded name, a local directory, or a Hub id (config file only)."""
    from transformers import AutoConfig

    if name in embedded_configs():
        data = json.loads(resources.files("hf_gammareg").joinpath(_EMBEDDED_DIR, f"{name}.json").read_text())
        data.pop("_comment", None)
        model_type = data.pop("model_type")
        return AutoConfig.for_model(model_type, **data)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise LookupError(
            f"cannot load a config for {name!r}: not an embedded config ({', '.join(embedded_configs())}), "
            f"not a local model directory, and not reachable on the Hub ({str(exc).splitlines()[0]})"
        ) from None


def build_meta_model(name: str):
    """Instantiate ``name``'s architecture on the meta device: no weights, no memory."""
    import torch
    import transformers

    config = load_config(name)
    archs = getattr(config, "architectures", None) or []
    cls = next((getattr(transformers, a) for a in archs if hasattr(transformers, a)), None)
    with torch.device("meta"):
        if cls is not None:
            return cls(config)
        return transformers.AutoModel.from_config(config)


def _print_table(report, policy, include, exclude, stream) -> None:
    decayed = report.decay_names(policy, include=include, exclude=exclude)
    use_rich = stream.isatty()
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            use_rich = False
    if not use_rich:
        print(report.to_table(policy, include=include, exclude=exclude), file=stream)
        print(report.summary(policy, include=include, exclude=exclude), file=stream)
        return
    table = Table(title=f"{report.model_class}: γ roles ({report.invariance}), policy {policy!r}")
    for col in ("parameter", "norm", "role", "decay", "reason"):
        table.add_column(col, overflow="fold")
    colors = {"branch": "green", "invariant": "cyan", "stream": "yellow", "head": "magenta"}
    for name in report.gammas:
        role = report.roles.get(name, "unused")
        table.add_row(name, report.norm_types.get(name, "?"), f"[{colors.get(role, 'white')}]{role}[/]",
                      "yes" if name in decayed else "no", report.reasons.get(name, "not used in forward"))
    console = Console(file=stream)
    console.print(table)
    console.print(report.summary(policy, include=include, exclude=exclude))


def _inspect(args) -> int:
    from .analysis import classify_gammas

    try:
        model = build_meta_model(args.model)
    except LookupError as exc:
        print(f"hf-gammareg: {exc}", file=sys.stderr)
        return 2
    report = classify_gammas(model, invariance=args.invariance)
    if args.json:
        data = report.to_dict()
        data["policy"] = args.policy
        data["decayed"] = sorted(report.decay_names(args.policy, include=args.include, exclude=args.exclude))
        print(json.dumps(data, indent=2))
    else:
        _print_table(report, args.policy, args.include, args.exclude, sys.stdout)
    return 0


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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-gammareg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the role of every γ of a model and what a policy decays")
    p.add_argument("model", help=f"embedded config ({', '.join(embedded_configs())}), local model dir, or Hub id")
    p.add_argument("--policy", default="guidelines", help=POLICY_HELP)
    p.add_argument("--invariance", default="exact", choices=INVARIANCE_MODES)
    p.add_argument("--include", nargs="*", default=[], help="regexes of γ names to decay regardless of role")
    p.add_argument("--exclude", nargs="*", default=[], help="regexes of γ names never to decay")
    p.add_argument("--json", action="store_true", help="machine-readable output (GammaReport JSON + decayed)")
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


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
