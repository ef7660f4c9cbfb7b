"""`GammaRegConfig`: how the γ of a model are regularized, the file that travels with it (no transformers import)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .patterns import normalize_patterns
from .policy import parse_policy, policy_help
from .roles import INVARIANCE_MODES

CONFIG_NAME = "gammareg_config.json"
REGULARIZATIONS = ("decoupled", "l2")
_MAX_FILE_BYTES = 1 << 20  # a config is a few hundred bytes; refuse anything absurd before parsing


def option_fields() -> tuple[dataclasses.Field, ...]:
    """The `GammaRegConfig` fields with their front-end metadata (help, argument name, choices, CLI flag)."""
    return dataclasses.fields(GammaRegConfig)


def option_help(f: dataclasses.Field) -> str:
    """The help text of config field ``f`` (generated when asked where it lists something that can grow, such as
    the registered policies)."""
    text = f.metadata["help"]
    return text() if callable(text) else text


def argument_name(f: dataclasses.Field) -> str:
    """The ``TrainingArguments`` field of config field ``f``: ``gamma_<name>`` unless the metadata names it."""
    return f.metadata["arg"] or f"gamma_{f.name}"


def check_coefficient(name: str, value, *, expected: str = "a number", type_error: type = ValueError) -> float:
    """A weight-decay coefficient as a float, or an error naming ``name``: a number (not a bool), finite, >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(f"{name}: expected {expected}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


class GammaConfigError(ValueError):
    """A γ option with a bad value. ``field`` names the `GammaRegConfig` field; ``message`` says what is wrong.

    ``str(error)`` is ``"<field>: <message>"``; front ends that name the option their own way (the TrainingArguments'
    ``gamma_*``, the CLI's ``--policy``) read ``field`` and ``message`` instead of parsing the text.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _option(default, help: str, *, arg: str | None = None, arg_type=None, arg_default=None, choices=None,
            cli: dict | None = None, factory=None):
    """A `GammaRegConfig` field with what every front end needs to declare it: its help; ``arg`` (the
    ``TrainingArguments`` field, ``gamma_<name>`` by default), with ``arg_type``/``arg_default`` where the argument
    differs from the config (a list option is ``None`` there); ``choices``; ``cli``: the ``hf-gammareg inspect``
    flag's ``argparse`` keywords (``None``: not a CLI flag)."""
    metadata = {"help": help, "arg": arg, "arg_type": arg_type, "arg_default": arg_default, "choices": choices,
                "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class GammaRegConfig:
    """How normalization scales (γ) are regularized. Saved as ``gammareg_config.json``.

    The one declaration of every γ option: `GammaRegTrainingArguments`' ``gamma_*`` fields, the CLI's flags,
    ``param_groups``/``decay_plan``'s keywords and the sweep's entries are derived from these fields and their
    metadata (`option_fields`).

    Parameters:
        policy (`str`, defaults to `"guidelines"`):
            Which γ get weight decay: `"guidelines"`, `"hf-default"`, `"all"`, `"none"`, a comma
            list of roles (`"branch,invariant"`) or `"only:<role>"`.
        gamma_weight_decay (`float` or `None`, defaults to `None`):
            Coefficient for decayed γ. `None` uses the Trainer's `weight_decay`.
        invariance (`str`, defaults to `"exact"`):
            `"exact"` or `"approximate"`; see docs/design.md § Invariance modes.
        include (`list[str]` or `str`, defaults to `[]`):
            Regexes (``re.search`` on parameter names) of γ to decay whatever their role; a string is one
            regex (never split on commas).
        exclude (`list[str]`, defaults to `[]`):
            Regexes of γ never to decay; wins over `include`.
        regularization (`str`, defaults to `"decoupled"`):
            `"decoupled"`: the optimizer's weight decay (AdamW-style). `"l2"`: the paper's coupled
            penalty λ/2·‖γ‖² added to the training loss; works with any optimizer.
    """

    policy: str = _option("guidelines", policy_help, cli={"default": "guidelines"})  # help made when asked
    gamma_weight_decay: float | None = _option(
        None, "Weight decay for decayed γ; defaults to --weight_decay.", arg="gamma_weight_decay")
    invariance: str = _option("exact", "How γ scale invariance is read from the graph.", choices=INVARIANCE_MODES,
                              cli={"default": "exact"})
    include: list[str] = _option(
        None, "Regexes of γ parameter names to decay whatever their role.", factory=list,
        arg_type=list[str] | None, cli={"action": "append", "metavar": "REGEX"})
    exclude: list[str] = _option(
        None, "Regexes of γ parameter names never to decay (wins over include).", factory=list,
        arg_type=list[str] | None, cli={"action": "append", "metavar": "REGEX"})
    regularization: str = _option(
        "decoupled", "'decoupled' optimizer weight decay or 'l2' penalty λ/2·‖γ‖² in the loss.",
        choices=REGULARIZATIONS)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise `GammaConfigError` (a ``ValueError``) naming the first field that is wrong."""
        if not isinstance(self.policy, str):
            raise GammaConfigError("policy", f"expected a string, got {type(self.policy).__name__}")
        if len(self.policy) > 200:
            raise GammaConfigError("policy", f"{len(self.policy)} characters is too long for a policy")
        try:
            parse_policy(self.policy)
        except ValueError as exc:
            raise GammaConfigError("policy", str(exc)) from None
        if self.gamma_weight_decay is not None:
            try:
                self.gamma_weight_decay = check_coefficient("gamma_weight_decay", self.gamma_weight_decay,
                                                            expected="a number or null")
            except ValueError as exc:
                raise GammaConfigError("gamma_weight_decay", str(exc).partition(": ")[2]) from None
        for f in option_fields():
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise GammaConfigError(f.name, f"must be one of {tuple(choices)}, got {getattr(self, f.name)!r}")
        for name in ("include", "exclude"):
            # A string is one regex, a list is several: `h\.{1,3}` must never become `h\.{1` and `3}`.
            try:
                setattr(self, name, normalize_patterns(getattr(self, name), name))
            except ValueError as exc:
                raise GammaConfigError(name, str(exc).partition(": ")[2]) from None

    def gamma_coefficient(self, weight_decay: float | None) -> float | None:
        """The weight decay a decayed γ gets: ``gamma_weight_decay``, else the run's ``weight_decay`` (``None``: a
        run not known yet, such as ``hf-gammareg inspect``'s)."""
        return weight_decay if self.gamma_weight_decay is None else self.gamma_weight_decay

    @classmethod
    def with_overrides(cls, config: "GammaRegConfig | None" = None, **overrides) -> "GammaRegConfig":
        """``config`` (default: the defaults) with the fields named in ``overrides`` replaced, validated; a
        keyword that is not a field raises ``TypeError`` naming the fields."""
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config: expected a GammaRegConfig, got {type(config).__name__}")
        known = [f.name for f in option_fields()]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TypeError(f"unknown γ option(s) {unknown}; the GammaRegConfig fields are {known}")
        return dataclasses.replace(config or cls(), **overrides)

    # -- serialization ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> "GammaRegConfig":
        """Build from a parsed JSON object, refusing unknown keys and wrong types by field name."""
        if not isinstance(data, dict):
            raise ValueError(f"{CONFIG_NAME} must hold a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{CONFIG_NAME}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        for name in ("policy", "invariance", "regularization"):
            if name in data and not isinstance(data[name], str):
                raise GammaConfigError(name, f"expected a string, got {type(data[name]).__name__}")
        for name in ("include", "exclude"):
            if name in data and not (isinstance(data[name], list) and all(isinstance(p, str) for p in data[name])):
                raise GammaConfigError(name, "expected a list of strings")
        return cls(**data)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write ``gammareg_config.json`` into ``save_directory``; returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ):
        """Upload ``gammareg_config.json`` to the Hub model repo ``repo_id``, creating the repo if needed.

        The arguments are those of transformers' ``PushToHubMixin.push_to_hub`` (``create_repo(...,
        exist_ok=True)``, then one commit); ``revision`` is the branch to commit to. Only the JSON file is
        uploaded. Read it back with ``GammaRegConfig.from_pretrained(repo_id)``. Returns the
        `huggingface_hub.CommitInfo` of the commit.
        """
        from huggingface_hub import HfApi

        self.validate()  # fields may have been changed since construction: never publish an invalid file
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        return api.upload_file(
            path_or_fileobj=self.to_json_string().encode("utf-8"),
            path_in_repo=CONFIG_NAME,
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message or f"Upload {CONFIG_NAME}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, **hub_kwargs) -> "GammaRegConfig":
        """Read ``gammareg_config.json`` from a directory, a file, or a Hub repo id (JSON only)."""
        path = os.fspath(path_or_repo_id)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            if os.path.exists(os.fspath(path_or_repo_id)):
                raise FileNotFoundError(f"no {CONFIG_NAME} in {os.fspath(path_or_repo_id)!r}")
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(os.fspath(path_or_repo_id), CONFIG_NAME, **hub_kwargs)
        if os.path.getsize(path) > _MAX_FILE_BYTES:
            raise ValueError(f"{path}: {os.path.getsize(path):,} bytes is too large for a {CONFIG_NAME}")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from None
            except RecursionError:  # e.g. 100,000 nested `[`: fits in the size limit, overflows json's parser
                raise ValueError(f"{path} is not a {CONFIG_NAME}: JSON nested too deeply") from None
        return cls.from_dict(data)
