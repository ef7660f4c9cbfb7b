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
import shutil  # noqa: E402

import pytest  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hf_gammareg"

# The layers, bottom first (README § Layout, docs/design.md § Layout). A module imports — at module level or inside
# a function, a module `__getattr__` included: lazily or not, no exemption — only from its own layer or below; within
# a layer the imports form no cycle.
LAYERS = [
    ("vocabulary and leaf tools", {"roles", "tables", "_plotting", "compat", "wrappers", "horizon", "hf_rule",
                                   "patterns"}),
    ("the report: roles and reasons", {"report"}),
    ("the dataflow analysis: model → report", {"analysis"}),
    ("policies: roles → which γ are decayed", {"policy"}),
    ("the config that travels with a model", {"config"}),
    ("the decision: report, config and the HF rule → a row per γ", {"decision"}),
    ("the decision as optimizer groups; sweep records", {"plan", "sweeps"}),
    ("the HF integration's parts", {"callbacks", "training_args", "first_batch"}),
    ("the trainers", {"trainer"}),
    ("the command line", {"cli"}),
    ("the package's exports", {""}),
]


def _layer(module: str) -> int:
    """The layer of ``hf_gammareg.x.y`` (by ``x``)."""
    top = module.split(".")[1] if "." in module else ""
    for k, (_name, members) in enumerate(LAYERS):
        if top in members:
            return k
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py: place it in LAYERS")


def _module_name(path: pathlib.Path, package: pathlib.Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: pathlib.Path, package: pathlib.Path):
    """``(module, [(imported module, names, top_level)])`` for one file of the package.

    Imports under ``if TYPE_CHECKING:`` are left out (they never run); every other one counts, wherever it is —
    a function, a method, a module-level ``__getattr__`` (a deprecation shim may forward only a name that moved
    down or sideways).
    """
    module = _module_name(path, package)
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


def _package_modules(package: pathlib.Path = PACKAGE):
    return {p: _imports(p, package) for p in sorted(package.rglob("*.py"))}


def _graph(package: pathlib.Path) -> dict[str, set[str]]:
    """Module → the package modules it imports, function-level imports (deprecation shims too) counted."""
    modules = _package_modules(package)
    known = {module for module, _ in modules.values()}
    graph: dict[str, set[str]] = {}
    for module, imports in modules.values():
        deps = set()
        for target, names, _top in imports:
            if not target.startswith("hf_gammareg"):
                continue
            submodules = {f"{target}.{n}" for n in names if f"{target}.{n}" in known}
            deps |= submodules  # `from . import x` imports the submodule x ...
            if len(submodules) < len(names) or not names:
                deps.add(target)  # ... and `from . import name` the package's own name
        graph[module] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def import_cycles(package: pathlib.Path = PACKAGE) -> list[list[str]]:
    graph = _graph(package)
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
    # A package's __init__ re-exports its submodules, which import their siblings directly: the package and its
    # own submodules are one unit, not a cycle.
    def unit(c):
        return all(x == c[0] or x.startswith(c[0] + ".") or c[0].startswith(x + ".") for x in c)

    return [c for c in cycles if not unit(c)]


def upward_imports(package: pathlib.Path = PACKAGE) -> list[str]:
    """Every import (any level, lazy or not) of a module in a higher layer than the importer's."""
    out = []
    for module, deps in _graph(package).items():
        for d in sorted(deps):
            if _layer(d) > _layer(module):
                out.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {d} ({LAYERS[_layer(d)][0]})")
    return out


def private_names_across_modules(package: pathlib.Path = PACKAGE) -> list[str]:
    offenders = []
    for path, (module, imports) in _package_modules(package).items():
        for target, names, _top in imports:
            if target.startswith("hf_gammareg") and target != module:
                offenders += [f"{module}: {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    return offenders


def test_no_import_cycle_in_the_package():
    """Imports inside hf_gammareg — module-level and function-level — form no cycle."""
    assert import_cycles() == []


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports() == []


def test_no_private_name_is_used_across_modules():
    """`from .x import _name` across modules of the package: a seam that should have a public name."""
    assert private_names_across_modules() == []


def test_the_analysis_knows_no_policy_and_no_trainer():
    """analysis/ imports nothing of the decision — not the policies, the HF rule, the decision, the plan, the config —
    nor transformers' Trainer; the report (below it) imports only the vocabulary."""
    above = ("hf_gammareg.policy", "hf_gammareg.hf_rule", "hf_gammareg.decision", "hf_gammareg.plan",
             "hf_gammareg.config", "hf_gammareg.trainer", "hf_gammareg.training_args", "hf_gammareg.callbacks",
             "hf_gammareg.cli", "transformers.trainer")
    modules = _package_modules().values()
    offenders = [f"{module} imports {target}" for module, imports in modules
                 if module.startswith("hf_gammareg.analysis") for target, _names, _top in imports
                 if target.startswith(above)]
    assert offenders == []
    report_imports = {target for module, imports in modules if module == "hf_gammareg.report"
                      for target, _names, _top in imports if target.startswith("hf_gammareg")}
    assert report_imports == {"hf_gammareg.roles", "hf_gammareg.tables"}


@pytest.fixture
def planted(tmp_path):
    """A copy of the package to plant a violation in: ``plant(module file, code)`` appends ``code`` to it."""
    root = tmp_path / "hf_gammareg"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))

    def plant(relative: str, code: str) -> pathlib.Path:
        path = root / relative
        path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")
        return root

    return plant


def test_the_checks_catch_a_planted_lazy_upward_import(planted):
    root = planted("roles.py", "def _later():\n    from .plan import GammaDecayPlan\n    return GammaDecayPlan")
    assert upward_imports(root) == ["hf_gammareg.roles (vocabulary and leaf tools) imports hf_gammareg.plan "
                                    "(the decision as optimizer groups; sweep records)"]
    assert upward_imports() == []  # the package itself is clean


@pytest.mark.parametrize("code", [
    # what GammaReport.decay_names did before the decision layer: a method importing the policies where it is used
    "class _Late:\n    def decay_names(self):\n        from .policy import select_decayed\n"
    "        return select_decayed",
    # a deprecation shim forwarding a name that lives above: no exemption for a module __getattr__
    "def __getattr__(name):\n    from .decision import decide\n    return decide",
])
def test_the_checks_catch_a_lazy_upward_import_in_a_method_or_a_shim(planted, code):
    root = planted("report.py", code)
    found = upward_imports(root)
    assert len(found) == 1 and found[0].startswith("hf_gammareg.report (the report: roles and reasons) imports ")


def test_the_checks_catch_a_planted_private_name(planted):
    root = planted("report.py", "from .tables import _width  # noqa")
    assert private_names_across_modules(root) == ["hf_gammareg.report: hf_gammareg.tables._width"]


def test_the_checks_catch_a_planted_cycle(planted):
    planted("tables.py", "def _later():\n    from .horizon import decay_horizon\n    return decay_horizon")
    root = planted("horizon.py", "def _later():\n    from .tables import text_table\n    return text_table")
    assert [set(c) for c in import_cycles(root)] == [{"hf_gammareg.horizon", "hf_gammareg.tables"}]


def test_the_package_exports_what_a_user_calls_and_moved_names_warn():
    import warnings

    import hf_gammareg

    # Written out by hand from the issue that shaped the API: what a training script calls.
    assert set(hf_gammareg.__all__) == {
        "__version__", "ROLES", "GammaAnalysisError", "GammaReport", "classify_gammas", "GammaRegConfig",
        "GammaConfigError", "GammaRegArgumentsMixin", "GammaRegTrainingArguments", "GammaRegSeq2SeqTrainingArguments",
        "GammaRegMixin", "GammaRegTrainer", "GammaRegSeq2SeqTrainer", "param_groups", "decay_plan", "l2_penalty",
        "decay_horizon", "GammaNormCallback"}
    from hf_gammareg.callbacks import gamma_norm_stats

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hf_gammareg.gamma_norm_stats is gamma_norm_stats
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "import it from hf_gammareg.callbacks" in str(caught[0].message)
