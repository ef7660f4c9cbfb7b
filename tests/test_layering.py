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


# -- the import graph ------------------------------------------------------------------------------------------
import ast  # noqa: E402
import pathlib  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hf_gammareg"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: pathlib.Path):
    """``(module, [(imported module, names, top_level)])`` for one file of the package."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking = {id(n) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)}
    top = set()
    for n in tree.body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            top.add(id(n))
        elif isinstance(n, ast.Try):  # `try: import x except ImportError:` at module level
            top |= {id(m) for m in ast.walk(n) if isinstance(m, (ast.Import, ast.ImportFrom))}
    skip = {id(m) for n in ast.walk(tree) if id(n) in type_checking for m in ast.walk(n)}
    out = []
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.ImportFrom):
            target = _resolve(module, n, path.name == "__init__.py")
            out.append((target, [a.name for a in n.names], id(n) in top))
        elif isinstance(n, ast.Import):
            out += [(a.name, [], id(n) in top) for a in n.names]
    return module, out


def _package_modules():
    return {p: _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_cycle_in_the_package():
    """Module-level imports inside hf_gammareg form no cycle (function-level imports are the lazy, upward ones)."""
    graph: dict[str, set[str]] = {}
    for module, imports in _package_modules().values():
        deps = set()
        for target, names, top in imports:
            if not top or not target.startswith("hf_gammareg"):
                continue
            deps.add(target)
            deps |= {f"{target}.{n}" for n in names}  # `from . import x` imports the submodule x
        graph[module] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    # A package's __init__ imports its submodules; a submodule importing a sibling through the package name
    # would be a cycle through __init__ — that is what the edges say.
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # `hf_gammareg.analysis` (the package) and its submodules import each other by design: __init__ re-exports.
    real = [c for c in cycles if not all(x.startswith("hf_gammareg.analysis") for x in c)
            and not (c[0] == "hf_gammareg" or c[-1] == "hf_gammareg")]
    assert real == []


def test_no_private_name_is_used_across_modules():
    """`from .x import _name` across modules of the package: a seam that should have a public name."""
    offenders = []
    for path, (module, imports) in _package_modules().items():
        for target, names, _top in imports:
            if target.startswith("hf_gammareg") and target != module:
                offenders += [f"{module}: {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == []


def test_the_analysis_knows_no_policy_and_no_trainer():
    """analysis/ imports nothing above it: not the policies, the plan, the config, nor transformers' Trainer."""
    above = ("hf_gammareg.policy", "hf_gammareg.plan", "hf_gammareg.config", "hf_gammareg.trainer",
             "hf_gammareg.training_args", "hf_gammareg.callbacks", "hf_gammareg.cli", "transformers.trainer")
    offenders = [f"{module} imports {target}" for path, (module, imports) in _package_modules().items()
                 if module.startswith("hf_gammareg.analysis") for target, _names, _top in imports
                 if target.startswith(above)]
    assert offenders == []
