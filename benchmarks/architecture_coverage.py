"""Every model type of the installed transformers, built on ``meta`` and classified without inputs.

    python benchmarks/architecture_coverage.py                       # all model types, JSON to coverage.json
    python benchmarks/architecture_coverage.py --only mixtral whisper --verbose
    python benchmarks/architecture_coverage.py --workers 2 --timeout 60 --json runs/coverage.json
    python benchmarks/architecture_coverage.py --json runs/after.json --compare runs/before.json  # roles that moved
    python benchmarks/architecture_coverage.py --from-json runs/after.json --compare runs/before.json  # re-summarize

For each ``model_type`` in ``CONFIG_MAPPING``: the default config with every layer count cut to 2 (a model on
``meta`` holds no memory, so widths do not matter; depth only costs time; lists of layer indices such as Mllama's
``intermediate_layers_indices`` are mapped into the 2 layers, and so are a backbone's ``stage_names`` /
``out_indices``, the hooks a parent config keeps into a sub-model's layers and the per-stage lists of a model whose
layers are stages), the base model (``AutoModel``'s
class for that config; for a sub-config without one — a VLM's text or vision part — the class of its modeling
module built for exactly that config) built on ``meta`` — as ``hf-gammareg inspect`` builds models — and
``classify_gammas`` with no inputs. A model type whose config or model cannot be built at all is "not
buildable" and is left out of the percentage. Each model runs in a worker process with a timeout; a worker
that crashes or hangs is replaced and the model counted as such. Prints buildable / classified / errors by
class / every failure by cause, with why no dummy batch can be guessed for it (``CAUSES``) / the slowest, and
writes every result as JSON (each γ's role, each failure's cause included) and the printed summary as a
``.txt`` beside it. ``--compare`` names every γ whose role differs from an earlier JSON's, model by model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import queue
import sys
import time
import traceback
import warnings
from collections import Counter

LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
              "num_encoder_layers", "num_decoder_layers", "text_layers", "vision_layers", "num_text_layers",
              "num_vision_layers", "num_backbone_layers", "depth", "num_transformer_layers", "num_blocks")


DECISION_POLICIES = ("guidelines", "hf-default", "all", "none", "only:branch", "only:invariant", "only:stream",
                     "only:head")


def shrink(config, seen=None) -> int | None:
    """Cut every layer count of ``config`` and its sub-configs to at most 2, in place; the layer count
    ``num_hidden_layers`` had before the cut, if it was cut."""
    from transformers import PretrainedConfig

    seen = set() if seen is None else seen
    if id(config) in seen:
        return None
    seen.add(id(config))
    aliases = getattr(config, "attribute_map", {}) or {}
    cut_from = None
    for key in LAYER_KEYS:
        if aliases.get(key, key) not in LAYER_KEYS:  # e.g. ConvNeXt maps num_hidden_layers to num_stages
            continue
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 2:
            try:
                setattr(config, key, 2)
            except Exception:  # noqa: BLE001 - some configs guard attributes; leave them
                continue
            if key == "num_hidden_layers":
                cut_from = value
                _follow_cut(config, value)
    sub_cuts = {shrink(value, seen) for value in list(vars(config).values()) if isinstance(value, PretrainedConfig)}
    sub_cuts.discard(None)
    if cut_from is None and len(sub_cuts) == 1:
        _follow_sub_cut(config, sub_cuts.pop())
    return cut_from


def _follow_sub_cut(config, n_before: int) -> None:
    """Hooks into a sub-model's layers kept on the parent config (DepthPro's ``intermediate_hook_ids`` into its patch
    encoder) follow that sub-model's cut from ``n_before`` layers to 2, each to the layer at the same depth fraction,
    in their own order and number (each hook pairs with an entry of another list, e.g. its feature width)."""
    for key, value in list(vars(config).items()):
        if ("hook" in key and isinstance(value, (list, tuple)) and value
                and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
            try:
                setattr(config, key, type(value)(min(1, max(0, i) * 2 // n_before) for i in value))
            except Exception:  # noqa: BLE001
                pass


def _follow_cut(config, n_before: int) -> None:
    """Lists of layer indices (Mllama's ``intermediate_layers_indices``) follow the cut from ``n_before`` layers to
    2: each index maps to the layer at the same depth fraction, so no index points past the last layer. So do a
    backbone's stages (see ``_follow_cut_stages``)."""
    for key, value in list(vars(config).items()):
        if ("layer" in key and ("indices" in key or "index" in key or key.endswith("_ids")) and isinstance(value, list)
                and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
            mapped = sorted({min(1, max(0, i) * 2 // n_before) for i in value})
            try:
                setattr(config, key, mapped)
            except Exception:  # noqa: BLE001
                pass
    _follow_cut_stages(config, n_before)
    _follow_cut_stage_lists(config, n_before)


def _follow_cut_stage_lists(config, n_before: int) -> None:
    """A model whose layers are stages with a width each (Muse Spark's audio encoder: ``hidden_sizes``, ``depths``,
    ``patch_sizes``, one entry per layer): every list with one entry per layer keeps the entries of the 2 kept
    layers, so the last stage's width is the one its final norm and projection are built for."""
    widths = getattr(config, "hidden_sizes", None)
    if not isinstance(widths, (list, tuple)) or len(widths) != n_before:
        return
    for key, value in list(vars(config).items()):
        if isinstance(value, (list, tuple)) and len(value) == n_before and key != "stage_names":
            try:
                setattr(config, key, type(value)(value[:2]))
            except Exception:  # noqa: BLE001
                pass


def _follow_cut_stages(config, n_before: int) -> None:
    """A backbone config whose ``stage_names`` are the stem and one stage per layer (ViTPose's, DINOv2's, RF-DETR's):
    the names cut to the 2 kept layers and ``out_indices`` mapped to the stage at the same depth fraction (the stem
    stays the stem), so the backbone still outputs a feature map for each one asked, as many as its neck expects
    when two or more were asked. Whether the names follow the layer count is asked of the config class itself (a
    copy built with 2 layers); Swin's follow its ``depths``, and stay."""
    names, indices = getattr(config, "stage_names", None), getattr(config, "out_indices", None)
    if not isinstance(names, list) or len(names) != n_before + 1 or not isinstance(indices, (list, tuple)):
        return
    try:
        cut_names = type(config)(num_hidden_layers=2).stage_names
    except Exception:  # noqa: BLE001 - a config class that cannot be built bare: leave its stages
        return
    if not isinstance(cut_names, list) or len(cut_names) != 3:
        return
    positive = [i % len(names) for i in indices]
    mapped = sorted({0 if i == 0 else max(1, min(2, -(-i * 2 // n_before))) for i in positive})
    try:
        config.stage_names = cut_names
        config.out_indices = mapped  # the setter aligns out_features
    except Exception:  # noqa: BLE001
        pass


def build(model_type: str):
    """``(model, error)``: the base model for ``model_type`` on meta, or why it could not be built."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(model_type)
    shrink(config)
    # Layer lists sized from the full layer count (e.g. per-layer types) must follow the cut.
    for key in ("layer_types", "mlp_layer_types"):
        value = getattr(config, key, None)
        n = getattr(config, "num_hidden_layers", None)
        if isinstance(value, list) and isinstance(n, int) and len(value) > n:
            setattr(config, key, value[:n])
    with torch.device("meta"):
        try:
            return AutoModel.from_config(config)
        except ValueError as exc:
            # Sub-configs of composite models (a VLM's text or vision part) have no AutoModel entry; their
            # own modeling module has the class whose `config_class` is this config.
            cls = _model_class_for(config)
            if cls is None:
                raise exc
            return cls(config)


def _model_class_for(config):
    """The base model class of ``config``'s modeling module built for exactly this config class, if one."""
    import importlib

    from transformers import PreTrainedModel

    package = type(config).__module__.rsplit(".", 1)[0]
    name = package.rsplit(".", 1)[-1]
    try:
        module = importlib.import_module(f"{package}.modeling_{name}")
    except ImportError:
        return None
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, PreTrainedModel)
             and getattr(obj, "config_class", None) is type(config)
             and "For" not in obj.__name__ and not obj.__name__.endswith("PreTrainedModel")]
    found.sort(key=lambda c: (not c.__name__.endswith("Model"), len(c.__name__)))
    return found[0] if found else None


def work(model_type: str) -> dict:
    import torch

    from hf_gammareg import GammaAnalysisError, classify_gammas

    out = {"model_type": model_type}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(model_type)
    except Exception as exc:  # noqa: BLE001 - every failure to build is data
        out.update(status="not_buildable",
                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return out
    out["model_class"] = type(model).__name__
    out["build_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = classify_gammas(model)
        out["classify_s"] = round(time.perf_counter() - start, 3)
        # hf-default must be exactly transformers.Trainer's split: its own method against hf_gammareg's rule.
        from transformers import Trainer

        from hf_gammareg.config import GammaRegConfig
        from hf_gammareg.decision import decide, decision_table
        from hf_gammareg.hf_rule import hf_default_decay_names

        trainer_rule = set(Trainer.get_decay_parameter_names(None, model))
        own_rule = hf_default_decay_names(model)
        # What each policy decays (the HF rule read from the model here, as every caller of `decide` does) and the
        # γ table: the record that a refactor of the decision layer changed none.
        decisions = {policy: sorted(decide(report, GammaRegConfig(policy=policy), own_rule).decayed)
                     for policy in DECISION_POLICIES}
        out["hf_default_matches_trainer"] = (trainer_rule == own_rule
                                             and set(decisions["hf-default"]) == trainer_rule & set(report.gammas))
        out.update(status="classified", device=report.device, n_gammas=len(report.gammas),
                   roles=dict(Counter(report.roles.values())), unused=len(report.unused),
                   gamma_roles={n: report.role_of(n) for n in report.gammas}, offsets=dict(report.offsets),
                   warnings=[str(w.message)[:300] for w in caught
                             if "γ" in str(w.message) or "gamma" in str(w.message)])
        out["decisions"] = decisions
        table = decision_table(decide(report, GammaRegConfig(policy="guidelines"), own_rule))
        out["table_sha256"] = hashlib.sha256(table.encode("utf-8")).hexdigest()
        if not report.gammas:
            out["status"] = "no_gammas"
    except GammaAnalysisError as exc:
        out.update(status="error", error_class="GammaAnalysisError", error=str(exc)[:1500],
                   classify_s=round(time.perf_counter() - start, 3))
    except Exception as exc:  # noqa: BLE001
        out.update(status="crash", error_class=type(exc).__name__, error=f"{exc}"[:600],
                   trace=traceback.format_exc()[-1500:], classify_s=round(time.perf_counter() - start, 3))
    finally:
        torch.set_grad_enabled(True)
    return out


def worker(tasks, results) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    while True:
        model_type = tasks.get()
        if model_type is None:
            return
        results.put(("start", model_type, time.time()))
        results.put(("done", model_type, work(model_type)))


def run_all(model_types: list[str], n_workers: int, timeout: float, verbose: bool,
            log_path: str | None = None) -> list[dict]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pending = list(model_types)
    done: dict[str, dict] = {}
    workers = {}  # slot -> (process, task queue, current model_type, started)

    def spawn(slot):
        tasks = ctx.Queue()
        proc = ctx.Process(target=worker, args=(tasks, results), daemon=True)
        proc.start()
        workers[slot] = [proc, tasks, None, None]

    def feed(slot):
        if pending:
            model_type = pending.pop(0)
            workers[slot][1].put(model_type)
            workers[slot][2], workers[slot][3] = model_type, time.time()
        else:
            workers[slot][1].put(None)
            workers[slot][2] = None

    for slot in range(n_workers):
        spawn(slot)
        feed(slot)
    total = len(model_types)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="model types", unit="model", disable=verbose)
    except ImportError:  # pragma: no cover
        bar = None
    while len(done) < total:
        try:
            kind, model_type, payload = results.get(timeout=1.0)
        except queue.Empty:
            kind = None
        if kind == "start":
            for w in workers.values():
                if w[2] == model_type:
                    w[3] = payload
        elif kind == "done":
            done[model_type] = payload
            if log_path:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(payload) + "\n")
            if bar is not None:
                bar.update(1)
            if verbose:
                print(json.dumps({k: v for k, v in payload.items() if k != "trace"}), flush=True)
            slot = next(s for s, w in workers.items() if w[2] == model_type)
            feed(slot)
        for slot, w in list(workers.items()):
            proc, _, current, started = w
            if current is None:
                continue
            dead = not proc.is_alive()
            late = started is not None and time.time() - started > timeout
            if dead or late:
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
                done[current] = {"model_type": current, "status": "crash" if dead else "timeout",
                                 "error_class": "WorkerDied" if dead else "Timeout",
                                 "error": f"worker exit code {proc.exitcode}" if dead else f"over {timeout:.0f} s"}
                if bar is not None:
                    bar.update(1)
                spawn(slot)
                feed(slot)
    if bar is not None:
        bar.close()
    for proc, tasks, *_ in workers.values():
        if proc.is_alive():
            tasks.put(None)
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    return [done[m] for m in model_types]


def failure_class(r: dict) -> str:
    """What kind of failure a record is: an input the builder cannot make, the exception type the forward raised…"""
    import re

    error = r.get("error") or ""
    if r["status"] != "error":
        return f"{r['status']}: {r.get('error_class', '?')}"
    match = re.search(r"cannot build a dummy `(\w+)`", error)
    if match:
        return "no dummy for an input the builder does not know (`inputs=` needed)"
    if "cannot build a dummy batch" in error:
        return "forward names no input the builder knows"
    match = re.search(r"The model raised: on \w+: (\w+)", error)
    if match:
        return f"forward raised {match.group(1)} on every dummy batch"
    if "no tensor in it" in error or "does not depend on any parameter" in error:
        return "no output tensor to read the dataflow from"
    return error[:90]


# Why a failure cannot be fixed by a better guess: each cause, what in the error shows it, and the reason. Read
# from the error text (the model's own exception), first match wins.
CAUSES = (
    (r"dummy `inference_session`",
     "a video tracker's `inference_session`: the processor's state (frames, prompts, memory bank), an object "
     "that no config field describes"),
    (r"names no input the builder knows",
     "a forward with no data input by name (Bark only generates; the VQ-GAN tokenizers' forward takes what their "
     "own pipeline hands it)"),
    (r"Cannot copy out of meta|expert_tensor|repeat_interleave a meta tensor|item\(\) cannot be called on meta"
     r"|not on the expected device",
     "sizes tensors from values computed from float activations (token routing, predicted durations), which a "
     "meta pass does not have, and the CPU copy with real values (the last pass) failed too or was over its size "
     "limit: it needs a real batch on a real device"),
    (r"cannot build a dummy `(\w+)`",
     "requires `{0}`, an input whose shape and meaning no config field states"),
    (r"must have same reduction dim|normalized_shape|Invalid channel dimensions|does not match expected suffix",
     "an input width or channel count that no config field states (a front end's frame stacking: Granite Speech 5's "
     "encoder takes 4 × num_mel_bins, delta-expanded mel frames stacked in pairs; a mel count only a subsampler's "
     "projection implies: Gemma 4's audio encoder)"),
)


# Failures whose error text does not show their cause, read in the model's source instead: a default config whose
# own fields disagree (no input can make such a model run; a checkpoint's config sets them consistently), sizes
# held in buffers that a meta pass does not have, an input no signature names. Keyed by model type because the
# cause is a fact about that type's default config or code, not something a dummy batch could change.
KNOWN_CAUSES = {
    "llama4": "the default config disagrees with itself: the vision adapter's pixel shuffle gives hidden_size / "
              "pixel_shuffle_ratio² = 3072 features, its MLP takes intermediate_size = 5632",
    "llama4_vision_model": "the default config disagrees with itself: the vision adapter's pixel shuffle gives "
                           "hidden_size / pixel_shuffle_ratio² = 3072 features, its MLP takes intermediate_size = 5632",
    "deepseek_ocr2_vision": "the default config disagrees with itself: the SAM encoder's last downsample_channels "
                            "(896) feed an encoder of hidden_size 4096",
    "qwen3_omni_moe_text": "the default config disagrees with itself: hidden_size 2048 over 28 heads gives an odd "
                           "head_dim (73), which rotary embeddings cannot rotate",
    "qwen3_omni_moe_thinker": "the default text config disagrees with itself: hidden_size 2048 over 28 heads gives "
                              "an odd head_dim (73), which rotary embeddings cannot rotate",
    "pp_ocrv6_small_det": "the default config disagrees with itself: its backbone outputs one feature map "
                          "(out_indices [4]), its neck takes four (layer_list_out_channels)",
    "uvdoc": "the default config disagrees with itself: its backbone outputs one feature map (out_indices [6]), "
             "its head concatenates one per stage_configs entry (6)",
    "lw_detr": "the default config has no projector_scale_factors, so the detector has no feature level to read",
    "voxtral_realtime_text": "its decoder layers need a time conditioning `t_cond` that the forward passes on through "
                             "**kwargs: no signature names it",
}
_FROM_BUFFERS = ("the convolutions' padding comes from lengths held in buffers, which a meta pass does not have "
                 "(it runs on the CPU on a (batch, 1, samples) waveform): it needs a real-device pass")
KNOWN_CAUSES.update({t: _FROM_BUFFERS for t in ("mimi", "mimi_encoder", "pocket_tts_audio_tokenizer",
                                                "pocket_tts_audio_tokenizer_encoder", "wavtokenizer")})


def failure_cause(r: dict) -> str:
    """The cause of one failure and why no dummy batch can be guessed for it (``KNOWN_CAUSES``, else ``CAUSES``)."""
    import re

    error = r.get("error") or ""
    if r["status"] in ("timeout", "crash"):
        return f"{r['status']} ({r.get('error_class')}): the worker did not return"
    if r.get("model_type") in KNOWN_CAUSES:
        return KNOWN_CAUSES[r["model_type"]]
    for pattern, why in CAUSES:
        match = re.search(pattern, error)
        if match:
            return why.format(*match.groups())
    if "no tensor in it" in error:
        return "the forward returns no tensor to read the dataflow from (an empty BackboneOutput for the cut config)"
    return ("a layout or value convention that no config field states (the model's own exception is in the JSON: "
            f"{failure_class(r).replace('forward raised ', '').replace(' on every dummy batch', '')})")


def summarize(rows: list[dict], slowest: int = 10) -> str:
    statuses = Counter(r["status"] for r in rows)
    buildable = [r for r in rows if r["status"] != "not_buildable"]
    classified = [r for r in buildable if r["status"] in ("classified", "no_gammas")]
    lines = [f"model types: {len(rows)}; buildable on meta from a default config (layers cut to 2): {len(buildable)}",
             f"classified on meta without inputs: {len(classified)} / {len(buildable)} = "
             f"{100 * len(classified) / max(1, len(buildable)):.1f} % "
             f"(with γ: {statuses['classified']}, without any γ: {statuses['no_gammas']})"]
    on_real = [r["model_type"] for r in classified if r.get("device") not in (None, "meta")]
    if on_real:
        lines.append(f"classified only by a real-device fallback: {len(on_real)}: {', '.join(on_real)}")
    failures = [r for r in buildable if r not in classified]
    if failures:
        lines.append(f"not classified: {len(failures)}, by class:")
        by_class: dict[str, list[str]] = {}
        for r in failures:
            by_class.setdefault(failure_class(r), []).append(r["model_type"])
        for text, members in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines.append(f"  {len(members):3d}  {text}  [{', '.join(members[:10])}{' …' if len(members) > 10 else ''}]")
        lines.append("not classified, by cause (why no dummy batch can be guessed), every model type:")
        by_cause: dict[str, list[str]] = {}
        for r in failures:
            r["cause"] = failure_cause(r)
            by_cause.setdefault(r["cause"], []).append(r["model_type"])
        for text, members in sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            lines.append(f"  {len(members):3d}  {text}: {', '.join(members)}")
    checked = [r for r in classified if "hf_default_matches_trainer" in r]
    mismatched = [r["model_type"] for r in checked if not r["hf_default_matches_trainer"]]
    lines.append(f"hf-default equals transformers.Trainer's split: {len(checked) - len(mismatched)} / {len(checked)}"
                 + (f" (differs: {', '.join(mismatched)})" if mismatched else ""))
    offset = [r for r in classified if r.get("offsets")]
    if offset:
        lines.append(f"with offset scales c + w: {len(offset)}: "
                     + ", ".join(f"{r['model_type']} {len(r['offsets'])}/{r['n_gammas']}" for r in offset))
    warned = [r for r in classified if r.get("warnings")]
    if warned:
        lines.append(f"classified with a γ warning: {len(warned)}: {', '.join(r['model_type'] for r in warned)}")
    timed = sorted((r for r in buildable if "classify_s" in r), key=lambda r: -r["classify_s"])[:slowest]
    lines.append("slowest classifications: " + ", ".join(f"{r['model_type']} {r['classify_s']:.2f} s" for r in timed))
    return "\n".join(lines)


_NO_ROLE = (None, "unused")


def compare(rows: list[dict], before: list[dict]) -> str:
    """The γ whose role differs between ``before`` and ``rows``, for the models classified in both runs."""
    old = {r["model_type"]: r for r in before}
    both, changed, newly = 0, [], []
    for r in rows:
        o = old.get(r["model_type"])
        if o is None or "gamma_roles" not in r or "gamma_roles" not in o:
            continue
        both += 1
        moved = {n: (o["gamma_roles"].get(n), role) for n, role in r["gamma_roles"].items()
                 if o["gamma_roles"].get(n) != role}
        # A γ that had no role before (unused, or not listed) and has one now was newly reached, not re-read.
        reached = {n: ab for n, ab in moved.items() if ab[0] in _NO_ROLE}
        moved = {n: ab for n, ab in moved.items() if ab[0] not in _NO_ROLE}
        if moved:
            changed.append((r["model_type"], moved))
        if reached:
            newly.append((r["model_type"], reached))
    gained = sorted(r["model_type"] for r in rows if r["status"] in ("classified", "no_gammas")
                    and old.get(r["model_type"], {}).get("status") not in ("classified", "no_gammas"))
    lost = sorted(r["model_type"] for r in rows if r["status"] not in ("classified", "no_gammas")
                  and old.get(r["model_type"], {}).get("status") in ("classified", "no_gammas"))
    lines = [(f"roles compared with the earlier run on {both} model types classified in both: "
              f"{len(changed)} with a γ whose role changed ({sum(len(m) for _, m in changed)} γ)")]
    for model_type, moved in changed:
        shown = "; ".join(f"{n}: {a} -> {b}" for n, (a, b) in list(moved.items())[:6])
        lines.append(f"  {model_type} ({len(moved)} γ): {shown}{' …' if len(moved) > 6 else ''}")
    n_reached = sum(len(m) for _, m in newly)
    lines.append(f"γ without a role before (unused, or not listed) that now have one or are listed: {n_reached} in "
                 f"{len(newly)} model types")
    for model_type, reached in newly:
        kinds = Counter(f"{a or 'not listed'} -> {b}" for a, b in reached.values())
        lines.append(f"  {model_type}: " + ", ".join(f"{k} ×{v}" for k, v in kinds.items()))
    lines.append(f"newly classified: {len(gained)}" + (f": {', '.join(gained)}" if gained else ""))
    lines.append(f"no longer classified: {len(lost)}" + (f": {', '.join(lost)}" if lost else ""))
    lines += compare_decisions(rows, old)
    return "\n".join(lines)


def compare_decisions(rows: list[dict], old: dict[str, dict]) -> list[str]:
    """Where both runs recorded them: the model types whose decayed set under some policy, or γ table, differs."""
    both, differ = 0, []
    for r in rows:
        o = old.get(r["model_type"])
        if o is None or "decisions" not in r or "decisions" not in o:
            continue
        both += 1
        policies = [p for p in r["decisions"] if o["decisions"].get(p) != r["decisions"][p]]
        table = o.get("table_sha256") != r.get("table_sha256")
        if policies or table:
            differ.append(f"  {r['model_type']}: " + ", ".join(policies + (["the γ table"] if table else [])))
    if not both:
        return []
    return [f"decisions ({', '.join(DECISION_POLICIES)}) and the guidelines γ table compared on {both} model types "
            f"recorded in both: {len(differ)} differ", *differ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="these model types only")
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per model type before the worker is killed")
    p.add_argument("--json", default="coverage.json", help="where to write every result")
    p.add_argument("--verbose", action="store_true", help="print each result as it comes")
    p.add_argument("--compare", metavar="JSON", help="an earlier run's JSON: list every γ whose role changed")
    p.add_argument("--from-json", metavar="JSON",
                   help="summarize an earlier run again, running nothing: rewrites its .txt and the causes in it")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            run = json.load(f)
        text = run["header"] + "\n" + summarize(run["results"])
        if args.compare:
            with open(args.compare, encoding="utf-8") as f:
                text += "\n" + compare(run["results"], json.load(f)["results"])
        print(text)
        _write(args.from_json, run["header"], run["results"], text, argv)
        return 0
    from transformers import __version__ as tf_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_types = args.only or sorted(CONFIG_MAPPING_NAMES)
    start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    log_path = os.path.splitext(args.json)[0] + ".partial.jsonl"  # each result as it lands
    if os.path.exists(log_path):
        os.remove(log_path)
    rows = run_all(model_types, args.workers, args.timeout, args.verbose, log_path)
    wall = time.perf_counter() - start
    import torch

    header = (f"transformers {tf_version}, torch {torch.__version__}, python {platform.python_version()}, "
              f"{args.workers} worker(s), timeout {args.timeout:.0f} s, wall {wall / 60:.1f} min")
    text = header + "\n" + summarize(rows)
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            text += "\n" + compare(rows, json.load(f)["results"])
    print(text)
    _write(args.json, header, rows, text, argv)
    return 0


def _write(path: str, header: str, rows: list[dict], text: str, argv) -> None:
    """Every record as JSON at ``path`` (each failure with its cause), the printed summary as ``.txt`` beside it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"header": header, "results": rows}, f, indent=1)
    with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
        f.write(f"# python benchmarks/architecture_coverage.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
                f"# {time.strftime('%Y-%m-%dT%H:%M')}, {os.cpu_count()} CPU(s)\n{text}\n")


if __name__ == "__main__":
    sys.exit(main())
