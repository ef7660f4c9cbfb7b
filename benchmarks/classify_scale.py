"""Cost of `classify_gammas` on a Llama-70B-shaped config, built and analysed on the meta device.

    python benchmarks/classify_scale.py            # 80 and 160 layers, one process each

Each size runs in a fresh subprocess so that peak RSS is that size's own. Printed per size: wall time
of `classify_gammas` (best of --repeats after one warm-up; model construction on meta excluded) against one plain
forward of the same meta model on the same dummy batch (best of --repeats) and their ratio, peak
RSS above the RSS right after `import transformers` and above the RSS once the meta model is built,
and at the end t(160)/t(80). Targets: ≤ 1 s, ≤ 150 MB, ratio ≤ 2.2.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LLAMA_70B = dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                 vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(layers: int, repeats: int) -> dict:
    import torch
    import transformers

    rss_after_import = _rss_mb()
    from hf_gammareg import classify_gammas
    from hf_gammareg.analysis import dummy_inputs

    config = transformers.LlamaConfig(num_hidden_layers=layers, **LLAMA_70B)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    # Most of the gap to `rss_after_import` is transformers lazily importing its Llama modeling code
    # (~130 MB on transformers 5.24), not the meta model (~7 MB); both are reported.
    rss_model_built = _rss_mb()
    classify_gammas(model)  # warm-up: first-call imports and lazy init are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        report = classify_gammas(model)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The yardstick: one plain forward of the same meta model on the same dummy batch, with autograd on (as the
    # analysis records it) and nothing else — no module hooks, no graph reading. It runs under the analysis's meta
    # dispatch mode, since a bare meta forward stops at transformers' data-dependent mask checks (`.all()` on a
    # meta tensor); the mode answers them and is part of any meta forward that runs at all.
    from hf_gammareg.analysis.trace import _MetaForward

    batch = dummy_inputs(model, device="meta")
    torch.set_num_threads(1)  # as the analysis runs its meta pass: each op is a few elements, threads only wait
    forward = []
    for i in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        with _MetaForward():
            model(**batch)
        if i:
            forward.append(time.perf_counter() - start)
    return {"layers": layers, "gammas": len(report.roles), "seconds": min(times),
            "median_s": sorted(times)[len(times) // 2], "forward_s": min(forward),
            "peak_rss_above_import_mb": peak - rss_after_import,
            "peak_rss_above_model_mb": peak - rss_model_built, "counts": {k: v[0] for k, v in report.counts().items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="*", default=[80, 160])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return 0
    results = {}
    for layers in args.layers:
        out = subprocess.run([sys.executable, __file__, "--child", str(layers), "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results[layers] = r
        print(f"layers={layers:4d}  γ={r['gammas']:4d}  "
              f"classify min {r['seconds']:.3f} s (median {r['median_s']:.3f} s), plain meta forward "
              f"{r['forward_s']:.3f} s (classify/forward {r['seconds'] / r['forward_s']:.2f})  "
              f"peak RSS +{r['peak_rss_above_import_mb']:.0f} MB over `import transformers` "
              f"(+{r['peak_rss_above_model_mb']:.0f} MB over the built meta model)  roles {r['counts']}")
    if 80 in results and 160 in results:
        print(f"t(160)/t(80) = {results[160]['seconds'] / results[80]['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
