"""`GammaRegTrainer` and `GammaRegSeq2SeqTrainer`: HF Trainers whose γ weight decay follows a policy.

The override is thin: `get_decay_parameter_names` asks :func:`gamma_decay_plan` (a pure function of
the model, its `GammaReport` and the config) which γ to decay; everything else is HF's own logic.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Seq2SeqTrainer, Trainer

from .analysis import classify_gammas
from .callbacks import REPORT_NAME, GammaNormCallback, model_card_section
from .config import (
    CONFIG_NAME,
    GammaRegConfig,
    GammaRegSeq2SeqTrainingArguments,
    GammaRegTrainingArguments,
    convert_training_args,
)
from .report import GammaReport

logger = logging.getLogger(__name__)

# Wrappers that add a prefix to parameter names: torch.compile (`_orig_mod.`), DDP/DataParallel
# (`module.`), FSDP1 (`_fsdp_wrapped_module.`). Roles are computed on the unwrapped model and the
# names mapped back.
_WRAPPER_ATTRS = ("_orig_mod", "module", "_fsdp_wrapped_module")
# Segments that wrappers insert *inside* names, at any depth: FSDP1 wraps each auto-wrapped layer
# (`layer.0._fsdp_wrapped_module.attention…`), activation checkpointing wraps blocks
# (`_checkpoint_wrapped_module`), and a compiled submodule keeps `_orig_mod`.
_INNER_WRAPPER_SEGMENTS = frozenset(("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"))


def unwrap_model(model: nn.Module) -> tuple[nn.Module, str]:
    """Strip torch.compile/DDP/FSDP wrappers; returns ``(inner model, name prefix the wrappers add)``."""
    prefix = ""
    while True:
        for attr in _WRAPPER_ATTRS:
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module) and attr in dict(model.named_children()):
                model, prefix = inner, f"{prefix}{attr}."
                break
        else:
            return model, prefix


def parameter_name_map(model: nn.Module) -> dict[str, str]:
    """``{name in the unwrapped model: name in model}`` for every parameter of a (wrapped) ``model``."""
    _, prefix = unwrap_model(model)
    out: dict[str, str] = {}
    for name, _ in model.named_parameters():
        inner = name[len(prefix):] if name.startswith(prefix) else name
        out.setdefault(".".join(s for s in inner.split(".") if s not in _INNER_WRAPPER_SEGMENTS), name)
    return out


def _is_fsdp1(model: nn.Module) -> bool:
    return any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())


@dataclass
class GammaDecayPlan:
    """Which γ the optimizer decays, which get the L2 penalty, and with what coefficient."""

    decayed: set[str]  # γ names (as in the model given to the Trainer) that are regularized
    gammas: set[str]  # every γ name
    coefficient: float
    regularization: str  # "decoupled" | "l2"
    frozen: set[str] = field(default_factory=set)  # γ that do not require grad (never decayed)

    @property
    def optimizer_decayed(self) -> set[str]:
        return self.decayed if self.regularization == "decoupled" else set()


def gamma_decay_plan(
    model: nn.Module,
    *,
    config: GammaRegConfig,
    weight_decay: float,
    report: GammaReport | None = None,
    hf_decay_names: set[str] | None = None,
) -> tuple[GammaDecayPlan, GammaReport]:
    """Decide γ decay for ``model``: classify (unless ``report`` is given) and apply the policy.

    ``hf_decay_names`` is HF's own decay set for ``model``; under ``hf-default`` it is followed
    exactly, so that policy reproduces plain `Trainer`. ``model`` may be wrapped (DDP, torch.compile,
    FSDP with ``use_orig_params=True``): the analysis runs on the unwrapped model (for FSDP, pass a
    ``report`` made before wrapping) and the plan holds ``model``'s own parameter names. Raises
    ``ValueError`` if a γ of the report cannot be found among ``model``'s parameters.
    """
    if report is None:
        if _is_fsdp1(model):
            # FSDP1 has already flattened and sharded the parameters: a forward on a copy of this
            # model sees the shards, not the layers. GammaRegTrainer.train classifies before wrapping.
            raise ValueError(
                "cannot classify γ of a model FSDP has already wrapped (its parameters are flattened "
                "shards); classify the model before wrapping it and pass the report: "
                "gamma_decay_plan(fsdp_model, report=classify_gammas(model), ...)")
        report = classify_gammas(unwrap_model(model)[0], invariance=config.invariance)
    # The report's names are the unwrapped model's; map them onto `model`'s own names.
    actual = parameter_name_map(model)
    missing = [n for n in report.gammas if n not in actual]
    if missing:
        # Never build an optimizer with a split that silently misses γ (e.g. FSDP without
        # use_orig_params=True, where the optimizer only sees `_flat_param`s; or a report made
        # for another model).
        raise ValueError(
            f"{len(missing)} γ of the γ report are not parameters of the model the optimizer is built for "
            f"(first: {missing[:3]}). Under FSDP set use_orig_params=True (fsdp_use_orig_params); a "
            "precomputed gamma_report= must come from this very model (after PEFT wrapping, if any).")
    if hf_decay_names is not None:
        # HF's own rule, as the Trainer applies it to this very model, decides `hf-default`.
        report.hf_default = sorted(n for n in report.gammas if actual[n] in hf_decay_names)
    decayed = report.decay_names(config.policy, include=config.include, exclude=config.exclude)
    params = dict(model.named_parameters())
    # A frozen γ (a PEFT/LoRA base model's norms) is never in the optimizer; leaving it out of the
    # plan keeps the logged counts and the model card true to what is trained.
    frozen = {n for n in report.gammas if not params[actual[n]].requires_grad}
    coefficient = weight_decay if config.gamma_weight_decay is None else config.gamma_weight_decay
    plan = GammaDecayPlan(
        decayed={actual[n] for n in decayed - frozen},
        gammas={actual[n] for n in report.gammas},
        coefficient=coefficient,
        regularization=config.regularization,
        frozen={actual[n] for n in frozen},
    )
    return plan, report


class GammaRegMixin:
    """Shared by both Trainers. Extra keyword arguments:

    * ``gamma_report``: a precomputed `GammaReport` (e.g. from ``classify_gammas(model, inputs=...)``
      for a model whose forward needs special inputs). Otherwise the model is classified once,
      when the optimizer is created.
    """

    _gamma_args_class: type = GammaRegTrainingArguments

    def __init__(self, model=None, args=None, *pos, gamma_report: GammaReport | None = None, **kwargs):
        args = convert_training_args(args, self._gamma_args_class)
        self.gamma_config: GammaRegConfig = args.gamma_config
        self.gamma_report: GammaReport | None = gamma_report
        self.gamma_plan: GammaDecayPlan | None = None
        super().__init__(model, args, *pos, **kwargs)
        if self.optimizer is not None and self.gamma_config.regularization == "decoupled":
            logger.warning(
                "hf_gammareg: an optimizer was passed in, so its parameter groups (and their weight decay) "
                "are yours: gamma_policy=%r does not reach it. Build the groups with "
                "trainer.get_decay_parameter_names(model), or use gamma_regularization='l2'.",
                self.gamma_config.policy)
        self.gamma_norm_callback: GammaNormCallback | None = None
        if args.gamma_log_norms:
            self.gamma_norm_callback = GammaNormCallback(policy=self.gamma_config.policy)
            # First in the list, so that reporters (TensorBoard, W&B, the console) see its log keys.
            self.callback_handler.callbacks.insert(0, self.gamma_norm_callback)

    # -- the decision -------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        hf_names = super().get_decay_parameter_names(model)
        plan = self._gamma_plan_for(model, set(hf_names))
        names = [n for n in hf_names if n not in plan.gammas]
        return names + sorted(plan.optimizer_decayed)

    def _gamma_plan_for(self, model: nn.Module, hf_names: set[str]) -> GammaDecayPlan:
        plan, self.gamma_report = gamma_decay_plan(
            model, config=self.gamma_config, weight_decay=self.args.weight_decay,
            report=self.gamma_report, hf_decay_names=hf_names,
        )
        self.gamma_plan = plan
        if self.gamma_norm_callback is not None:
            # Under FSDP the names carry inner wrapper segments the prefix does not cover, and the
            # parameters are shards: the callback then finds none of its names and logs nothing.
            self.gamma_norm_callback.set_report(self.gamma_report, prefix=unwrap_model(model)[1])
        if self.is_world_process_zero():
            logger.info("hf_gammareg: %s", self.gamma_report.summary(
                self.gamma_config.policy, include=self.gamma_config.include, exclude=self.gamma_config.exclude))
            if plan.frozen:
                logger.info("hf_gammareg: %d γ do not require grad and are left out of the optimizer", len(plan.frozen))
        return plan

    def create_optimizer(self, *args, **kwargs):
        created = self.optimizer is None
        optimizer = super().create_optimizer(*args, **kwargs)
        plan = self.gamma_plan
        if not created or plan is None or plan.regularization != "decoupled":
            return optimizer
        if plan.coefficient == self.args.weight_decay or not plan.decayed:
            return optimizer
        # A γ-specific coefficient: move decayed γ out of HF's decay group into a group of their own.
        model = args[0] if args else kwargs.get("model")
        model = self.model if model is None else model
        params = {id(p): p for n, p in model.named_parameters() if n in plan.decayed and p.requires_grad}
        groups = getattr(optimizer, "param_groups", None)
        if not groups or not params:
            return optimizer
        moved = []
        for group in groups:
            keep = [p for p in group["params"] if id(p) not in params]
            moved += [p for p in group["params"] if id(p) in params]
            group["params"] = keep
        # The marker lets a resume re-apply the coefficient after the checkpoint's state is loaded.
        optimizer.add_param_group({"params": moved, "weight_decay": plan.coefficient, "gamma_group": True})
        return optimizer

    # -- what travels with the model --------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call=_internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            self.gamma_config.save_pretrained(output_dir)
            if self.gamma_report is not None:
                with open(os.path.join(output_dir, REPORT_NAME), "w", encoding="utf-8") as f:
                    f.write(self.gamma_report.to_json())

    def create_model_card(self, *args, **kwargs):
        super().create_model_card(*args, **kwargs)
        path = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or self.gamma_report is None or self.gamma_plan is None:
            return
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            card = f.read()
        if "## γ regularization" in card:
            return
        section = model_card_section(self.gamma_report, self.gamma_config.policy, self.gamma_plan.decayed,
                                     self.gamma_plan.coefficient, self.gamma_plan.regularization,
                                     self.gamma_config.invariance)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card.rstrip("\n") + "\n\n" + section)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._check_resume_config(resume_from_checkpoint)
        if self.gamma_report is None and self.optimizer is None and self.model_init is None:
            # Classify now, while `self.model` is still the user's model: FSDP flattens and shards
            # the parameters in `accelerator.prepare` *before* HF builds the optimizer (FSDP1 delays
            # optimizer creation), and a forward on shards cannot show the layers' dataflow.
            self.gamma_report = classify_gammas(unwrap_model(self.model)[0], invariance=self.gamma_config.invariance)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as exc:
            if "parameter group" not in str(exc):
                raise
            # torch matches saved optimizer state to parameters by position inside each group; a
            # resume under another γ split (allowed by gamma_allow_config_change) moves γ between
            # groups, so the saved state cannot be mapped back. Say so instead of torch's message.
            raise ValueError(
                f"the optimizer state in {checkpoint} was saved under another split of the parameters into "
                "weight-decay groups (a different γ policy, include/exclude, or gamma_weight_decay on/off), so "
                "it cannot be restored onto this run's groups. To resume the weights with a fresh optimizer "
                f"state, remove {os.path.join(checkpoint, 'optimizer.pt')}.") from exc
        plan = self.gamma_plan
        if checkpoint is not None and plan is not None and self.optimizer is not None:
            # `Optimizer.load_state_dict` restores each group's hyperparameters from the checkpoint; under
            # gamma_allow_config_change the γ coefficient is this run's, not the checkpoint's.
            for group in getattr(self.optimizer, "param_groups", []):
                if group.get("gamma_group"):
                    group["weight_decay"] = plan.coefficient

    def _check_resume_config(self, resume_from_checkpoint) -> None:
        """Refuse to resume under a γ config other than the checkpoint's (unless allowed)."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                return  # HF raises its own clear error for this
        path = os.path.join(resume_from_checkpoint, CONFIG_NAME)
        if not os.path.isfile(path):
            return
        saved = GammaRegConfig.from_pretrained(resume_from_checkpoint)
        if saved == self.gamma_config or self.args.gamma_allow_config_change:
            return
        diff = {k: (v, getattr(self.gamma_config, k)) for k, v in saved.to_dict().items()
                if getattr(self.gamma_config, k) != v}
        raise ValueError(
            f"{resume_from_checkpoint} was trained with a different γ config "
            + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            + ". Resuming would change which γ are decayed mid-run. Use the checkpoint's settings "
            "(GammaRegConfig.from_pretrained(checkpoint)), or pass --gamma_allow_config_change to do it anyway."
        )

    # -- coupled L2 ---------------------------------------------------------------------------------
    def gamma_l2_penalty(self, model: nn.Module | None = None) -> torch.Tensor | None:
        """λ/2·Σ‖γ‖² over the γ the policy regularizes (``None`` unless ``regularization="l2"``)."""
        if self.gamma_plan is None and self.gamma_config.regularization == "l2":
            # A user-supplied optimizer skips create_optimizer, where the plan is normally made; the
            # penalty needs no optimizer, so make the plan here rather than silently skip it.
            self._gamma_plan_for(self.model, set(super().get_decay_parameter_names(self.model)))
        plan = self.gamma_plan
        if plan is None or plan.regularization != "l2" or not plan.decayed or plan.coefficient == 0:
            return None
        model = self.model if model is None else model
        gammas = [p for n, p in model.named_parameters() if n in plan.decayed and p.requires_grad]
        if not gammas:
            return None
        return 0.5 * plan.coefficient * sum(p.float().pow(2).sum() for p in gammas)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return out  # evaluation losses stay the model's own
        penalty = self.gamma_l2_penalty()
        if penalty is None:
            return out
        # training_step divides the loss by the accumulation steps unless the loss was already
        # normalized by num_items_in_batch; the penalty must count once per optimizer step.
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None) or (
                getattr(self, "compute_loss_func", None) is not None)
        if scaled:
            penalty = penalty / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        if return_outputs:
            loss, outputs = out
            return loss + penalty.to(loss.dtype), outputs
        return out + penalty.to(out.dtype)


class GammaRegTrainer(GammaRegMixin, Trainer):
    """`transformers.Trainer` whose normalization-scale weight decay follows a `GammaRegConfig` policy.

    Takes `GammaRegTrainingArguments` (a plain `TrainingArguments` is converted, with defaults for
    the ``gamma_*`` fields) and, optionally, ``gamma_report=``.
    """

    _gamma_args_class = GammaRegTrainingArguments


class GammaRegSeq2SeqTrainer(GammaRegMixin, Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` counterpart of `GammaRegTrainer`."""

    _gamma_args_class = GammaRegSeq2SeqTrainingArguments
