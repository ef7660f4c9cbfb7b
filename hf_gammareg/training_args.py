"""The TrainingArguments subclasses: `transformers.TrainingArguments` plus the ``gamma_*`` fields
of a `GammaRegConfig`."""

from __future__ import annotations

import copyreg
import dataclasses
from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments, TrainingArguments

from .config import REGULARIZATIONS, GammaRegConfig
from .policy import POLICY_HELP
from .roles import INVARIANCE_MODES

_GAMMA_FIELDS = {
    "gamma_policy": "policy",
    "gamma_weight_decay": "gamma_weight_decay",
    "gamma_invariance": "invariance",
    "gamma_include": "include",
    "gamma_exclude": "exclude",
    "gamma_regularization": "regularization",
}


@dataclass
class GammaRegArgumentsMixin:
    """The ``gamma_*`` fields shared by both TrainingArguments subclasses.

    Parameters:
        > γ regularization

        gamma_policy (`str`, defaults to `"guidelines"`): which γ get weight decay (see `GammaRegConfig.policy`).
        gamma_weight_decay (`float`, *optional*): coefficient for decayed γ; defaults to `weight_decay`.
        gamma_invariance (`str`, defaults to `"exact"`): `"exact"` or `"approximate"`.
        gamma_include (`list[str]`, *optional*): regexes of γ to decay regardless of role.
        gamma_exclude (`list[str]`, *optional*): regexes of γ never to decay (wins over include).
        gamma_regularization (`str`, defaults to `"decoupled"`): `"decoupled"` weight decay or `"l2"` loss penalty.
        gamma_log_norms (`bool`, defaults to `True`): log mean ‖γ‖ per role at each logging step.
        gamma_allow_config_change (`bool`, defaults to `False`): resume from a checkpoint saved under
            another γ config (refused by default: it would silently change the split mid-run).
    """

    gamma_policy: str = field(default="guidelines", metadata={"help": POLICY_HELP})
    gamma_weight_decay: float | None = field(
        default=None, metadata={"help": "Weight decay for decayed γ; defaults to --weight_decay."}
    )
    gamma_invariance: str = field(
        default="exact",
        metadata={"help": "How γ scale invariance is read from the graph.", "choices": list(INVARIANCE_MODES)},
    )
    gamma_include: list[str] | None = field(
        default=None, metadata={"help": "Regexes of γ parameter names to decay whatever their role."}
    )
    gamma_exclude: list[str] | None = field(
        default=None, metadata={"help": "Regexes of γ parameter names never to decay (wins over include)."}
    )
    gamma_regularization: str = field(
        default="decoupled",
        metadata={"help": "'decoupled' optimizer weight decay or 'l2' penalty λ/2·‖γ‖² in the loss.",
                  "choices": list(REGULARIZATIONS)},
    )
    gamma_log_norms: bool = field(
        default=True, metadata={"help": "Log mean ‖γ‖ per role at each logging step (GammaNormCallback)."}
    )
    gamma_allow_config_change: bool = field(
        default=False,
        metadata={"help": "Allow resuming from a checkpoint whose gammareg_config.json differs from this run's."},
    )

    def __post_init__(self):
        # Validate first, so a bad gamma_* value is reported by its own name, not as an HF error.
        try:
            self._gamma_config = self._build_gamma_config()
        except ValueError as exc:
            field_name, _, message = str(exc).partition(": ")
            arg = next((k for k, v in _GAMMA_FIELDS.items() if v == field_name), field_name)
            raise ValueError(f"{arg}: {message}") from None
        super().__post_init__()

    def _build_gamma_config(self) -> GammaRegConfig:
        return GammaRegConfig(**{cfg: getattr(self, arg) for arg, cfg in _GAMMA_FIELDS.items()})

    @property
    def gamma_config(self) -> GammaRegConfig:
        """The ``GammaRegConfig`` these arguments describe."""
        return self._build_gamma_config()


@dataclass
class GammaRegTrainingArguments(GammaRegArgumentsMixin, TrainingArguments):
    """`transformers.TrainingArguments` plus the ``gamma_*`` fields of `GammaRegArgumentsMixin`."""


@dataclass
class GammaRegSeq2SeqTrainingArguments(GammaRegArgumentsMixin, Seq2SeqTrainingArguments):
    """`transformers.Seq2SeqTrainingArguments` plus the ``gamma_*`` fields of `GammaRegArgumentsMixin`."""


_GAMMA_CLASSES: dict[type, type] = {
    TrainingArguments: GammaRegTrainingArguments,
    Seq2SeqTrainingArguments: GammaRegSeq2SeqTrainingArguments,
}


def gamma_arguments_class(base: type) -> type:
    """The arguments class of ``base`` (a `TrainingArguments` subclass) with the ``gamma_*`` fields.

    ``base`` itself when it has them; `GammaRegTrainingArguments` / `GammaRegSeq2SeqTrainingArguments` for
    transformers' two; for any other (TRL's ``SFTConfig``…) a dataclass ``GammaReg<base>`` of
    `GammaRegArgumentsMixin` and ``base``, made once. It is still a ``base``: a trainer that rebuilds arguments
    not of its own class (``SFTTrainer`` does, with ``SFTConfig(**args.to_dict())``) keeps them as they are.
    """
    if issubclass(base, GammaRegArgumentsMixin):
        return base
    if base not in _GAMMA_CLASSES:
        # No module holds the made class, so pickling (the Trainer's training_args.bin) goes through its base.
        namespace = {"__doc__": f"`{base.__module__}.{base.__qualname__}` plus the ``gamma_*`` fields of "
                                "`GammaRegArgumentsMixin`.",
                     "__module__": __name__, "__reduce__": _reduce_made}
        _GAMMA_CLASSES[base] = dataclass(type(f"GammaReg{base.__name__}", (GammaRegArgumentsMixin, base), namespace))
    return _GAMMA_CLASSES[base]


def _reduce_made(self):
    cls = type(self)
    base = next((b for b, made in _GAMMA_CLASSES.items() if made is cls), None)
    if base is None:  # a subclass of a made class lives in some module: pickled by reference, as usual
        return copyreg.__newobj__, (cls,), self.__dict__.copy()
    return _rebuild_made, (base, self.__dict__.copy())


def _rebuild_made(base: type, state: dict):
    args = object.__new__(gamma_arguments_class(base))
    args.__dict__.update(state)
    return args


def convert_training_args(args: TrainingArguments | None, default: type = GammaRegTrainingArguments
                          ) -> TrainingArguments:
    """Arguments with the ``gamma_*`` fields, every other value kept.

    ``args`` itself when it has them (any `GammaRegArgumentsMixin`); ``default(output_dir="trainer_output")``
    for ``None``; else a copy of ``args`` as ``gamma_arguments_class`` of its own class (an ``SFTConfig`` stays
    an ``SFTConfig``), or of ``default``'s class when that extends it (a plain `TrainingArguments` given to
    `GammaRegSeq2SeqTrainer` gains the seq2seq fields, which `Seq2SeqTrainer` reads).
    """
    if args is None:
        return default(output_dir="trainer_output")
    if isinstance(args, GammaRegArgumentsMixin):
        return args
    target = default if issubclass(default, type(args)) else gamma_arguments_class(type(args))
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and hasattr(args, f.name)}
    known = {f.name for f in dataclasses.fields(target) if f.init}
    return target(**{k: v for k, v in values.items() if k in known})
