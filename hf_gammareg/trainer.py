"""`GammaRegTrainer` and `GammaRegSeq2SeqTrainer`: HF Trainers whose γ weight decay follows a policy.

The override is thin: `get_decay_parameter_names` asks :func:`~hf_gammareg.plan.decay_plan` (a pure function of
the model, its `GammaReport`, the config and the Trainer's own decay names, shared with
:func:`hf_gammareg.param_groups`) which parameters to decay, and `create_optimizer` gives the optimizer that plan's
parameter groups; the table, the horizon and the model card read that one plan. Everything else is HF's own logic.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
import weakref

import torch
from torch import nn
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback
from transformers.utils import logging as hf_logging

from .analysis import classify_gammas
from .analysis.inputs import describe_inputs, dummy_inputs_apply
from .callbacks import REPORT_NAME, GammaNormCallback, model_card_section
from .config import CONFIG_NAME, GammaRegConfig
from .first_batch import first_training_batch
from .horizon import GroupHorizon, planned_decay_horizon
from .plan import GammaDecayPlan, decay_plan, l2_penalty, refuse_sharded
from .report import GammaReport
from .roles import GammaAnalysisError
from .training_args import GammaRegSeq2SeqTrainingArguments, GammaRegTrainingArguments, convert_training_args
from .wrappers import unwrap_model

# What the trainer says goes where `Trainer`'s own lines go: a child of transformers' `transformers.trainer` logger
# inherits its verbosity (`set_verbosity`, --log_level / --log_level_replica, which `Trainer.__init__` applies), its
# handler and its format. transformers' example scripts raise only that logger to INFO, so a logger of our own
# stayed silent there; and muting `transformers.trainer` mutes these lines with Trainer's.
logger = hf_logging.get_logger("transformers.trainer.hf_gammareg")


class GammaRegMixin:
    """Shared by both Trainers. Extra keyword arguments:

    * ``gamma_report``: a precomputed `GammaReport` (e.g. from ``classify_gammas(model, inputs=...)``).
    * ``gamma_inputs``: one batch (a dict of tensors, as the model's forward takes it) to read the roles from.

    Without either, the model is classified once, before training (or when the optimizer is created), from
    the first ``per_device_train_batch_size`` rows of ``train_dataset`` collated by this trainer's
    ``data_collator`` after its ``remove_unused_columns`` filtering — the batch training itself would build
    from those rows — with every RNG state restored afterwards and the training dataloader, its sampler and
    the dataset's iteration untouched. Dummy inputs built from the config are the fallback: no training
    data, a streaming (iterable) dataset, which is never read ahead, or a first batch the model rejects (with
    a warning). The report's ``inputs_source`` records which.

    It composes with any `Trainer` subclass, ``class GammaRegSFTTrainer(GammaRegMixin, SFTTrainer)``: arguments
    with the ``gamma_*`` fields (a dataclass of `GammaRegArgumentsMixin` and the trainer's own arguments class)
    are used as they are; plain ones (an ``SFTConfig``) become a subclass of their own class with the ``gamma_*``
    defaults (:func:`~hf_gammareg.training_args.convert_training_args`).
    """

    #: Built when ``args`` is None; a plain `TrainingArguments` it extends is raised to it.
    gamma_args_class: type = GammaRegTrainingArguments

    def __init__(self, model=None, args=None, *pos, gamma_report: GammaReport | None = None, gamma_inputs=None,
                 **kwargs):
        if gamma_report is not None and gamma_inputs is not None:
            raise ValueError("gamma_report= and gamma_inputs=: give one — the report already holds the roles that "
                             "gamma_inputs would be read from")
        args = convert_training_args(args, self.gamma_args_class)
        self.gamma_config: GammaRegConfig = args.gamma_config
        self.gamma_report: GammaReport | None = gamma_report
        self.gamma_inputs = gamma_inputs
        self.gamma_plan: GammaDecayPlan | None = None
        self.gamma_horizon: GroupHorizon | None = None  # set when training starts (see gamma_decay_horizon)
        self._gamma_plan_model: nn.Module | None = None  # the model (maybe wrapped) whose names the plan holds
        try:
            super().__init__(model, args, *pos, **kwargs)
        except TypeError as exc:
            if "gamma_" not in str(exc):
                raise
            # A base that rebuilds arguments not of its own class (TRL's trainers: `SFTConfig(**args.to_dict())`).
            raise TypeError(
                f"{type(self).__name__}: a base trainer rebuilt the {type(args).__name__} as its own arguments class, "
                f"which has no gamma_* fields ({exc}). Pass args= of the class it expects (e.g. SFTConfig(...)), "
                "which gains the gamma_* defaults, or of a dataclass of GammaRegArgumentsMixin and that class for "
                "gamma_* values.") from exc
        if self.optimizer is not None and self.gamma_config.regularization == "decoupled":
            logger.warning(
                "hf_gammareg: an optimizer was passed in, so its parameter groups (and their weight decay) "
                "are yours: gamma_policy=%r does not reach it. Build the groups with "
                "hf_gammareg.param_groups(model, weight_decay, policy=...), or use gamma_regularization='l2'.",
                self.gamma_config.policy)
        self.gamma_norm_callback: GammaNormCallback | None = None
        if args.gamma_log_norms:
            self.gamma_norm_callback = GammaNormCallback(policy=self.gamma_config.policy)
            # First in the list, so that reporters (TensorBoard, W&B, the console) see its log keys.
            self.callback_handler.callbacks.insert(0, self.gamma_norm_callback)
        self.callback_handler.add_callback(_GammaTableCallback(self))

    # -- the decision -------------------------------------------------------------------------------
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        plan = self._gamma_plan_for(model, set(super().get_decay_parameter_names(model)))
        return plan.decay_parameter_names()

    def _gamma_plan_for(self, model: nn.Module, hf_names: set[str]) -> GammaDecayPlan:
        if self.gamma_report is None:
            refuse_sharded(model)
            self.gamma_report = self._gamma_classify(unwrap_model(model)[0])
        plan = decay_plan(model, self.args.weight_decay, self.gamma_config, report=self.gamma_report,
                          hf_decay_names=hf_names)
        self.gamma_report, self.gamma_plan, self._gamma_plan_model = plan.report, plan, model
        if self.gamma_norm_callback is not None:
            # Under FSDP1 the names carry inner wrapper segments the prefix does not cover, and the
            # parameters are flat shards: the callback then finds none of its names and logs nothing.
            self.gamma_norm_callback.set_report(self.gamma_report, prefix=unwrap_model(model)[1])
        return plan

    def _ensure_gamma_plan(self) -> GammaDecayPlan:
        """The plan, made for ``self.model`` with the Trainer's own non-γ rule if nothing has made it yet."""
        if self.gamma_plan is None:
            self._gamma_plan_for(self.model, set(super().get_decay_parameter_names(self.model)))
        return self.gamma_plan

    def create_optimizer(self, *args, **kwargs):
        created = self.optimizer is None
        optimizer = super().create_optimizer(*args, **kwargs)
        plan = self.gamma_plan
        if not created or plan is None or not plan.gamma_group:
            # HF built its two groups from `get_decay_parameter_names`, i.e. from the plan: they already
            # are `plan.param_groups(model)`.
            return optimizer
        # A γ-specific coefficient: HF put the decayed γ in its decay group; move them into the plan's
        # third group — the very group `param_groups()` returns.
        model = args[0] if args else kwargs.get("model")
        model = self.model if model is None else model
        gamma_group = plan.param_groups(model)[2]
        wanted = {id(p) for p in gamma_group["params"]}
        groups = getattr(optimizer, "param_groups", None)
        if not groups:
            return optimizer
        held = {id(p) for group in groups for p in group["params"]}
        if not wanted <= held:
            # An optimizer that chose its own parameters (GaLore, LOMO, a factory such as Muon).
            logger.warning("hf_gammareg: optim=%r does not hold the γ in its parameter groups; gamma_weight_decay "
                           "cannot be applied to it", self.args.optim)
            return optimizer
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in wanted]
        optimizer.add_param_group(gamma_group)
        return optimizer

    # -- what the optimizer does, γ by γ ----------------------------------------------------------------
    def gamma_table(self, *, notices: bool = True) -> str:
        """The table of what this trainer's optimizer does to each γ (read from ``optimizer.param_groups``).

        A header (policy, invariance, include/exclude, coefficients), one row per γ (role, decayed or
        not, the coefficient of the param group that holds it, the reason), a summary line, and "!" lines
        for what deserves attention, each with its fix. Before the optimizer exists, the planned values.
        `train()` logs it once, from the main process, where `Trainer` logs (logger
        ``transformers.trainer.hf_gammareg``, so transformers' verbosity and ``--log_level`` decide): the table at
        INFO, then the "!" lines that name a fix at WARNING. ``notices=False`` leaves those out.
        """
        self._ensure_gamma_plan()
        horizon = self.gamma_horizon if self.gamma_horizon is not None else self.gamma_decay_horizon()
        return self.gamma_plan.to_table(self._gamma_plan_model, self.optimizer, arg_prefix="gamma_", horizon=horizon,
                                        notices=notices)

    # -- the decay horizon ------------------------------------------------------------------------------
    def gamma_decay_horizon(self) -> GroupHorizon | None:
        """What weight decay alone does to the decayed γ over this run (:func:`hf_gammareg.decay_horizon`).

        Once training has started: the real optimizer and scheduler over the steps left
        (``state.max_steps − state.global_step``, optimizer steps, gradient accumulation counted). Before:
        the optimizer and schedule the Trainer will build from its arguments (the same
        ``get_optimizer_cls_and_kwargs`` and ``get_scheduler``, on the plan's parameter groups) over the steps
        its arguments and training set give. ``None`` when the step count cannot be known yet (no ``max_steps``
        and no sized training set) or the optimizer cannot be built here.
        """
        self._ensure_gamma_plan()
        plan, model = self.gamma_plan, self._gamma_plan_model
        if self.optimizer is not None and self.lr_scheduler is not None and self.state.max_steps:
            steps = self.state.max_steps - self.state.global_step
            return plan.horizon(model, self.optimizer, steps, self.lr_scheduler) if steps > 0 else None
        steps = self._gamma_planned_steps()
        if steps is None:
            return None
        group = plan.decay_group()  # the optimizer is not built yet: the plan's own coefficients
        return _planned_or_none(self.args, steps, group.weight_decay, group.penalty)

    def _gamma_planned_steps(self) -> int | None:
        """The optimizer steps `train()` will run, as `Trainer.set_initial_training_values` counts them."""
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        dataset = self.train_dataset
        try:
            n = len(dataset)
        except TypeError:  # an IterableDataset without a length needs max_steps anyway
            return None
        batch = self._train_batch_size
        batches = n // batch if args.dataloader_drop_last else math.ceil(n / batch)
        batches = math.ceil(batches / max(1, args.world_size))  # accelerate gives each process its share
        per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
        return math.ceil(args.num_train_epochs * per_epoch)

    def _log_gamma_table(self) -> None:
        plan = self.gamma_plan
        if plan is None:
            return  # no plan: an optimizer passed in with decoupled decay, which __init__ warned about
        self.gamma_horizon = self.gamma_decay_horizon()
        if not self.is_world_process_zero():
            return
        # The table (with the horizon and its notice: "decay barely moves γ" is what every fine-tuning run gets, it
        # informs) shows wherever Trainer's INFO lines do; the notices that name a fix follow it at WARNING, so
        # that they show at transformers' default verbosity too.
        logger.info("hf_gammareg: %s", self.gamma_table(notices=False))
        notices = plan.notices(self._gamma_plan_model, self.optimizer, arg_prefix="gamma_")
        if notices:
            logger.warning("hf_gammareg: %s", "\n".join(f"! {n}" for n in notices))
        if plan.frozen:
            logger.info("hf_gammareg: %d γ do not require grad and are left out of the optimizer", len(plan.frozen))

    # -- what travels with the model --------------------------------------------------------------------
    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # During training (hub_strategy "every_save", "checkpoint"…) transformers copies only the modeling files of
        # the checkpoint into output_dir before uploading output_dir; the γ config and report are the checkpoint's
        # too, so they go up with every push, not only with the final one.
        if self.is_world_process_zero():
            for name in (CONFIG_NAME, REPORT_NAME):
                source = os.path.join(checkpoint_folder, name)
                if os.path.isfile(source):
                    shutil.copy(source, os.path.join(self.args.output_dir, name))
        super()._push_from_checkpoint(checkpoint_folder)

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
        horizon_line, _ = self.gamma_plan.horizon_lines(self.gamma_horizon)
        section = model_card_section(self.gamma_plan, horizon=horizon_line)
        with open(path, "w", encoding="utf-8") as f:
            f.write(card.rstrip("\n") + "\n\n" + section)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._check_resume_config(resume_from_checkpoint)
        if self.gamma_report is None and self.optimizer is None and self.model_init is None:
            # Classify now, while `self.model` is still the user's model: FSDP flattens and shards
            # the parameters in `accelerator.prepare` *before* HF builds the optimizer (FSDP1 delays
            # optimizer creation), and a forward on shards cannot show the layers' dataflow.
            self.gamma_report = self._gamma_classify(unwrap_model(self.model)[0])
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # -- which batch the roles are read from ------------------------------------------------------------
    def _gamma_classify(self, model: nn.Module) -> GammaReport:
        """The roles of ``model`` from ``gamma_inputs``, else the first training batch, else dummy inputs."""
        invariance = self.gamma_config.invariance
        if self.gamma_inputs is not None:
            return classify_gammas(model, inputs=self.gamma_inputs, invariance=invariance)
        batch, why_not = self._gamma_training_batch()
        batch_error = None
        if batch is not None:
            try:
                report = classify_gammas(model, inputs=batch, invariance=invariance)
            except GammaAnalysisError as exc:
                batch_error = exc
            else:
                report.inputs_source = "training batch"
                if self.is_world_process_zero():
                    logger.info("hf_gammareg: %s", report.inputs_line())
                return report
            if not dummy_inputs_apply(model):  # a wrapper whose forward no dummy batch can fit: no retries to list
                raise self._gamma_inputs_error(model, batch, why_not, batch_error, None) from batch_error
        try:
            report = classify_gammas(model, invariance=invariance)
        except GammaAnalysisError as exc:
            raise self._gamma_inputs_error(model, batch, why_not, batch_error, exc) from (batch_error or exc)
        if batch_error is not None and self.is_world_process_zero():
            # Training will meet the same rejection on its first step; the dummy roles are what we can offer.
            logger.warning("hf_gammareg: %s's forward rejected the first training batch (%s): %s. %s instead.",
                           type(model).__name__, describe_inputs(batch), _model_error(batch_error),
                           report.inputs_line().rstrip("."))
        elif self.is_world_process_zero():
            logger.info("hf_gammareg: %s (%s).", report.inputs_line().rstrip("."), why_not)
        return report

    def _gamma_training_batch(self):
        """``(batch, None)``: the first training batch, built as training builds it; or ``(None, why not)``
        (:func:`hf_gammareg.first_batch.first_training_batch`)."""
        return first_training_batch(self)

    def _gamma_inputs_error(self, model, batch, why_not, batch_error, dummy_error) -> GammaAnalysisError:
        """The model's own exception on the training batch first; then the dummy batches, if any were tried."""
        name = type(model).__name__
        if batch is not None:
            text = (f"could not read the γ roles of {name} from the first training batch ({describe_inputs(batch)}): "
                    f"its forward raised {_model_error(batch_error)}")
        else:
            text = f"could not read the γ roles of {name}: no training batch ({why_not})"
        if dummy_error is not None:
            dummies = getattr(dummy_error, "tried", [])
            dummy_errors = getattr(dummy_error, "errors", []) or [str(dummy_error)]
            built = "built from its config" if getattr(model, "config", None) is not None else "guessed from its layers"
            text += (f"; nor on {len(dummies)} dummy batch(es) {built} ("
                     + "; ".join(f"{{{d}}}" for d in dummies) + f"), the last of which raised {dummy_errors[-1]}")
        return GammaAnalysisError(
            text + ". Remedies: pass GammaRegTrainer(..., gamma_inputs=batch) with one batch your model's forward "
            "accepts (a dict of tensors), or a precomputed gamma_report=classify_gammas(model, inputs=batch).")

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
        if self.gamma_config.regularization == "l2":
            # A user-supplied optimizer skips create_optimizer, where the plan is normally made; the
            # penalty needs no optimizer, so make the plan here rather than silently skip it.
            self._ensure_gamma_plan()
        plan = self.gamma_plan
        if plan is None or plan.regularization != "l2" or not plan.decayed or plan.coefficient == 0:
            return None
        return l2_penalty(self.model if model is None else model, plan)

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
            penalty = penalty / getattr(self, "current_gradient_accumulation_steps",
                                        self.args.gradient_accumulation_steps)
        if return_outputs:
            loss, outputs = out
            return loss + penalty.to(loss.dtype), outputs
        return out + penalty.to(out.dtype)


def planned_horizon(args, num_steps: int, weight_decay: float, *, l2: bool = False) -> GroupHorizon | None:
    """Deprecated (0.2): ``hf_gammareg.horizon.planned_decay_horizon(args, num_steps=..., weight_decay=..., l2=...)``,
    the one planned horizon. ``None`` (logged at INFO) where that optimizer cannot be built here, as before; goes in
    the next release."""
    warnings.warn("hf_gammareg.trainer.planned_horizon is deprecated: use hf_gammareg.horizon.planned_decay_horizon("
                  "args, num_steps=..., weight_decay=...); the old name goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return _planned_or_none(args, num_steps, weight_decay, l2)


def _planned_or_none(args, num_steps: int, weight_decay: float, l2: bool) -> GroupHorizon | None:
    """`planned_decay_horizon` of ``args``' run, or ``None`` (logged at INFO) when its optimizer cannot be built here
    (bitsandbytes without CUDA, …): the horizon is then computed when training starts."""
    try:
        return planned_decay_horizon(args, num_steps=num_steps, weight_decay=weight_decay, l2=l2)
    except Exception as exc:  # noqa: BLE001 - a horizon line is information; training itself will say what is wrong
        logger.info("hf_gammareg: no planned decay horizon (%s: %s); it is computed when training starts",
                    type(exc).__name__, exc)
        return None


def _model_error(exc: GammaAnalysisError) -> str:
    """The model's own exception behind a failed analysis pass, in one line."""
    errors = getattr(exc, "errors", None)
    if errors:
        return errors[-1].split(": ", 1)[-1]  # less the "on cpu: " of which pass it was
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"


class _GammaTableCallback(TrainerCallback):
    """Logs the trainer's γ table when training starts: the optimizer exists by then, wrapped or not."""

    def __init__(self, trainer: GammaRegMixin):
        self._trainer = weakref.ref(trainer)  # the trainer holds this callback; no reference cycle

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self._trainer()
        if trainer is not None:
            trainer._log_gamma_table()


class GammaRegTrainer(GammaRegMixin, Trainer):
    """`transformers.Trainer` whose normalization-scale weight decay follows a `GammaRegConfig` policy.

    Takes `GammaRegTrainingArguments` (a plain `TrainingArguments` is converted, with defaults for
    the ``gamma_*`` fields) and, optionally, ``gamma_report=`` or ``gamma_inputs=``. The roles are read from
    the first batch of ``train_dataset`` when there is one (see `GammaRegMixin`).
    """

    gamma_args_class = GammaRegTrainingArguments


class GammaRegSeq2SeqTrainer(GammaRegMixin, Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` counterpart of `GammaRegTrainer`."""

    gamma_args_class = GammaRegSeq2SeqTrainingArguments
