"""The TrainingArguments subclasses: `transformers.TrainingArguments` plus the ``gamma_*`` fields
of a `GammaRegConfig`."""

from __future__ import annotations

import copyreg
import dataclasses
import typing
from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments, TrainingArguments

from .config import GammaConfigError, GammaRegConfig, argument_name, option_fields, option_help

_TRAINER_ONLY = (  # Trainer settings that do not travel with the model (no GammaRegConfig field)
    ("gamma_log_norms", bool, field(
        default=True, metadata={"help": "Log mean ‖γ‖ per role at each logging step (GammaNormCallback)."})),
    ("gamma_allow_config_change", bool, field(
        default=False,
        metadata={"help": "Allow resuming from a checkpoint whose gammareg_config.json differs from this run's."})),
)
# {TrainingArguments field: GammaRegConfig field}, derived from the config's declaration.
ARGUMENT_FIELDS = {argument_name(f): f.name for f in option_fields()}


def _argument_field(f: dataclasses.Field, hint) -> tuple:
    """The ``gamma_*`` TrainingArguments field declared by config field ``f`` (its type hint ``hint``)."""
    md = f.metadata
    metadata = {"help": option_help(f)}
    if md["choices"]:
        metadata["choices"] = list(md["choices"])
    if md["arg_type"] is not None:
        return argument_name(f), md["arg_type"], field(default=md["arg_default"], metadata=metadata)
    return argument_name(f), hint, field(default=f.default, metadata=metadata)


class _GammaArguments:
    """What the ``gamma_*`` fields do: validation first, and the `GammaRegConfig` they describe."""

    def __post_init__(self):
        # Validate first, so a bad gamma_* value is reported by its own name, not as an HF error.
        try:
            self._gamma_config = self._build_gamma_config()
        except GammaConfigError as exc:
            arg = next((a for a, name in ARGUMENT_FIELDS.items() if name == exc.field), exc.field)
            raise ValueError(f"{arg}: {exc.message}") from None
        super().__post_init__()

    def _build_gamma_config(self) -> GammaRegConfig:
        return GammaRegConfig(**{name: getattr(self, arg) for arg, name in ARGUMENT_FIELDS.items()})

    @property
    def gamma_config(self) -> GammaRegConfig:
        """The ``GammaRegConfig`` these arguments describe."""
        return self._build_gamma_config()


_HINTS = typing.get_type_hints(GammaRegConfig)
# The gamma_* fields are generated from GammaRegConfig: one declaration of every γ option.
GammaRegArgumentsMixin = dataclasses.make_dataclass(
    "GammaRegArgumentsMixin",
    [_argument_field(f, _HINTS[f.name]) for f in option_fields()] + list(_TRAINER_ONLY),
    bases=(_GammaArguments,),
    namespace={"__module__": __name__, "__doc__": """The ``gamma_*`` fields shared by both TrainingArguments subclasses.

    Generated from `GammaRegConfig`'s fields (one ``gamma_<field>`` each, its help and choices), plus two
    Trainer settings that do not travel with the model.

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
    """},
)


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
