"""Export overhead: hwnas MobileNetV2 .tflite vs keras.applications MobileNetV2 .tflite, side by side.

Prints one JSON object: op counts of both graphs, conversion times, and LiteRT latencies (XNNPACK,
1 thread by default) as medians of ``--rounds`` interleaved rounds of ``--runs`` invocations each
(interleaving spreads the load of a shared machine over both models alike). Goal: ratio <= 1.02.

With ``--int8`` it also trains EfficientNet-B0-style and EfficientNet-lite-style nets (the -cifar
variants of both spaces' reference members) briefly on scikit-learn digits and prints the int8 top-1
drop of each (lite replaces swish by ReLU6 and drops SE, which is what makes it quantize well).

    python benchmarks/export_overhead.py [--threads 1] [--rounds 15] [--runs 20] [--int8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _latency(args) -> dict:
    import keras

    from hwnas.export.keras import keras_model
    from hwnas.export.tflite import convert, op_counts, time_tflite
    from hwnas.nn import build_model
    from hwnas.zoo import zoo_arch

    arch = zoo_arch("mobilenetv2")
    t = time.perf_counter()
    km = keras_model(arch, build_model(arch, seed=0))
    ours = convert(km)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref_model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    ref = convert(ref_model)
    t_ref = time.perf_counter() - t
    lat_ours, lat_ref = [], []
    for _ in range(args.rounds):  # interleaved rounds: both models see the same machine load
        lat_ours.append(statistics.median(time_tflite(ours, threads=args.threads, warmup=3, runs=args.runs)))
        lat_ref.append(statistics.median(time_tflite(ref, threads=args.threads, warmup=3, runs=args.runs)))
    m_ours, m_ref = statistics.median(lat_ours), statistics.median(lat_ref)
    return {
        "model": "MobileNetV2 1.0 / 224, float32",
        "runtime": "ai_edge_litert Interpreter (default XNNPACK delegate)",
        "threads": args.threads, "rounds": args.rounds, "runs_per_round": args.runs,
        "hwnas_ms_median": round(m_ours, 3), "keras_applications_ms_median": round(m_ref, 3),
        "ratio": round(m_ours / m_ref, 4), "goal_ratio_max": 1.02,
        "hwnas_ms_round_medians": [round(v, 3) for v in lat_ours],
        "keras_applications_ms_round_medians": [round(v, 3) for v in lat_ref],
        "hwnas_ops": op_counts(ours), "keras_applications_ops": op_counts(ref),
        "hwnas_total_ops": sum(op_counts(ours).values()), "keras_applications_total_ops": sum(op_counts(ref).values()),
        "hwnas_convert_s": round(t_ours, 2), "keras_applications_convert_s": round(t_ref, 2),
        "hwnas_bytes": len(ours), "keras_applications_bytes": len(ref),
    }


def _int8_drop(args) -> dict:
    import numpy as np
    import torch

    from hwnas.export.checks import quant_report, real_images, torch_probs
    from hwnas.export.keras import keras_model
    from hwnas.export.tflite import convert, op_counts, run_tflite
    from hwnas.nn import build_model
    from hwnas.zoo import zoo_arch

    torch.set_num_threads(1)
    b0 = zoo_arch("efficientnet-b0")
    lite_text = b0.to_compact().replace("_se0.25", "").replace("_sw", "_r6")
    from hwnas.arch import ArchSpec

    archs = {"efficientnet-b0": b0, "efficientnet-lite0": ArchSpec.from_compact(lite_text)}
    out = {}
    x, y = real_images(1797, args.int8_resolution, 3, seed=0, with_labels=True)
    xt, yt, xv, yv = x[:1400], y[:1400], x[1400:], y[1400:]
    for name, arch in archs.items():
        arch = arch.with_resolution(args.int8_resolution).with_classes(10).with_width(args.int8_width)
        torch.manual_seed(0)
        model = build_model(arch, train=True, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        xt_t = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
        yt_t = torch.from_numpy(yt).long()
        t = time.perf_counter()
        for _ in range(args.int8_epochs):
            perm = torch.randperm(len(xt_t))
            for i in range(0, len(perm), 64):
                idx = perm[i:i + 64]
                loss = torch.nn.functional.cross_entropy(model(xt_t[idx]), yt_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        train_s = time.perf_counter() - t
        q = convert(keras_model(arch, model), quantize="int8", representative_data=xt[:128], route="frozen")
        rep = quant_report(torch_probs(model, xv), run_tflite(q, xv), yv)
        out[name] = {"resolution": arch.resolution, "width": arch.width_multiplier, "epochs": args.int8_epochs,
                     "train_s": round(train_s, 1), **{k: (round(v, 4) if isinstance(v, float) else v)
                                                      for k, v in rep.to_dict().items()},
                     "int8_ops": op_counts(q)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--int8", action="store_true", help="also measure the int8 drop of EfficientNet-B0 vs -lite")
    ap.add_argument("--int8-resolution", type=int, default=32)
    ap.add_argument("--int8-width", type=float, default=0.5)
    ap.add_argument("--int8-epochs", type=int, default=4)
    args = ap.parse_args(argv)
    result = {"benchmark": "export_overhead", "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    import ai_edge_litert
    import tensorflow as tf

    result["versions"] = {"tensorflow": tf.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?")}
    result["latency"] = _latency(args)
    if args.int8:
        result["int8_drop"] = _int8_drop(args)
    result["load_avg_1m_after"] = os.getloadavg()[0]
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
