"""``hwnas export`` and ``hwnas scale``: thin wrappers over :mod:`hwnas.export`."""

from __future__ import annotations

import click

from hwnas.cli import main
from hwnas.cli.common import arch_argument, fmt_millions, print_json, print_table


@main.command("export")
@arch_argument
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="PyTorch state dict (torch.save) for ARCH. Without it: fresh random weights.")
@click.option("--format", "fmt", default="tflite", show_default=True,
              help="Artifact format: tflite | onnx | tvm.")
@click.option("--quantize", type=str, default=None, help="tflite only: int8 | float16.")
@click.option("--calib-data", default=None,
              help="Representative images: a built-in dataset (digits, mnist: its train split, preprocessed as the "
                   "run in --weights was trained) or a .npy/.npz of preprocessed float NHWC (N,R,R,C) "
                   "[default: the data of the run in --weights, named in its config.yaml].")
@click.option("--calib-samples", type=int, default=64, show_default=True, help="Calibration images used.")
@click.option("--int8-io", is_flag=True, help="int8: int8 input/output tensors instead of float32.")
@click.option("--eval-data", default=None,
              help="Held-out labelled data for the checks (.npz with x, y; or digits/mnist: its test split) "
                   "[default: the test split of a built-in --calib-data, else of the run's data, else digits].")
@click.option("--eval-samples", type=int, default=1000, show_default=True, help="Evaluation images used.")
@click.option("--max-int8-drop", type=float, default=1.0, show_default=True,
              help="int8: fail when top-1 drops more than this many points below float.")
@click.option("--min-agreement", type=float, default=0.95, show_default=True,
              help="int8: fail when int8 top-1 agrees with float on a smaller fraction of evaluation images.")
@click.option("--qat", "qat", type=int, default=0, show_default=True,
              help="int8: quantization-aware fine-tuning epochs before conversion (needs a built-in --calib-data).")
@click.option("--layer-report", is_flag=True,
              help="int8: per-layer quantization error (worst layers); always shown when a gate fails.")
@click.option("--recalibrate-bn", "recal", type=int, default=0, show_default=True,
              help="Re-estimate BatchNorm statistics on N calibration batches first (supernet subnets).")
@click.option("--device", "device", default=None,
              help="tflite: a device (e.g. edgetpu, mobile-gpu-tflite) whose op support partitions the graph; fails when ops would "
                   "run on its CPU.")
@click.option("--allow-cpu-fallback", is_flag=True, help="With --device: export even when ops fall back to the CPU.")
@click.option("--target", default="llvm", show_default=True,
              help="tvm: llvm (host) | android, aarch64 (aarch64-linux-android CPU) | aarch64-linux (plain "
                   "aarch64 Linux board, $TVM_CROSS_CC) | opencl-adreno | opencl-mali | opencl | vulkan | cuda.")
@click.option("--tune-trials", type=int, default=0, show_default=True,
              help="tvm: MetaSchedule trials (0 = untuned; tuning takes minutes).")
@click.option("--rpc-tracker", default=None,
              help="tvm: HOST:PORT of a TVM RPC tracker; tuning candidates run on the device registered there.")
@click.option("--rpc-key", default=None, help="tvm: the device key at --rpc-tracker.")
@click.option("--lint", type=click.Choice(["error", "warn"]), default="error", show_default=True,
              help="What unexpected TRANSPOSE/RESHAPE/PAD/DEQUANTIZE ops in a .tflite do.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Max abs diff of softmax outputs vs PyTorch for float32 artifacts, per unit of logit scale "
                   "(the largest |logit - mean logit| of the reference, at least 1).")
@click.option("--float16-tolerance", type=float, default=1e-2, show_default=True,
              help="Max abs diff of softmax outputs vs PyTorch for float16 .tflite, per unit of logit scale.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("-o", "--output", "output", required=True, type=click.Path(), help="Artifact to write.")
def export_cmd(arch, width, resolution, weights, fmt, quantize, calib_data, calib_samples, int8_io, eval_data,
               eval_samples, max_int8_drop, min_agreement, qat, layer_report, recal, device, allow_cpu_fallback,
               target, tune_trials, rpc_tracker, rpc_key, lint, tolerance, float16_tolerance, as_json, output):
    """Export ARCH (YAML, compact string or zoo name) to .tflite / .onnx / a TVM library.

    Checks always run and fail the export: weights are matched against the spec, the artifact's
    ops are listed (and linted for .tflite), and its outputs are compared with PyTorch on held-out
    real images preprocessed as in training (float32/float16: max abs softmax diff; int8: top-1
    agreement with float and accuracy drop).
    """
    from hwnas.export import export
    from hwnas.zoo import load_arch

    if quantize is not None and quantize.lower() in ("none", "float32", "fp32"):
        quantize = None
    if quantize is not None and quantize not in ("int8", "float16"):
        from hwnas.errors import ExportError

        raise ExportError(f"unknown quantization '{quantize}'; expected int8 or float16")
    spec = load_arch(arch, width=width, resolution=resolution)
    res = export(spec, output, fmt=fmt.lower(), weights=weights, quantize=quantize, calib_data=calib_data,
                 calib_samples=calib_samples, int8_io=int8_io, eval_data=eval_data, eval_samples=eval_samples,
                 max_int8_drop=max_int8_drop, min_int8_agreement=min_agreement, qat_epochs=qat,
                 layer_report=layer_report, recalibrate_bn_batches=recal, target=target, tune_trials=tune_trials,
                 lint=lint, parity_tolerance=tolerance, float16_tolerance=float16_tolerance, device=device,
                 allow_cpu_fallback=allow_cpu_fallback, rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    if as_json:
        print_json(res.to_dict())
        return
    for note in res.notes:
        click.echo(f"note: {note}")
    what = res.format + (f" ({res.quantize})" if res.quantize else "") + (f" [{res.target}]" if res.target else "")
    click.echo(f"wrote {res.path} ({res.size_bytes / 1e6:.2f} MB, {what})")
    if res.ops:
        click.echo(f"ops ({sum(res.ops.values())}): " + ", ".join(f"{k} {v}" for k, v in res.ops.items()))
    if res.data:
        click.echo(f"check data: {res.data}")
    if res.partition:
        p = res.partition
        first = p["first_unsupported"]
        click.echo(f"partition on {p['device']}: {p['on_accelerator']} ops on the accelerator, {p['on_cpu']} on the "
                   "CPU"
                   + (f" (first unsupported: {first['op']}: {first['reason']})" if first else "")
                   + f" [{p['source']}]")
    if res.qat:
        a, b = res.qat["float_accuracy_before"], res.qat["float_accuracy_after"]
        if a is not None:
            click.echo(f"QAT {res.qat['epochs']} epoch(s): float top-1 {a:.4f} -> {b:.4f} (fake-quantized weights)")
    if res.parity:
        p = res.parity
        tol = "" if p["tolerance"] is None else \
            f", limit {p['limit']:.3g} ({p['tolerance']:g} x logit scale {p['logit_scale']:.2f})"
        acc = "" if p.get("accuracy") is None else (f"; top-1 PyTorch {p['torch_accuracy']:.4f}, "
                                                     f"{p['backend']} {p['accuracy']:.4f}")
        label = f"{res.quantize} {p['backend']}" if res.quantize else p["backend"]
        if p["tolerance"] is None:  # int8: no output tolerance, its gates are the next line
            tol = " (no limit: int8 is gated by agreement and accuracy below)"
        click.echo(f"{label} parity vs PyTorch on {p['samples']} held-out images: max abs diff {p['max_abs_diff']:.2e}"
                   f"{tol}, top-1 agreement {p['top1_agreement']:.3f}{acc}")
    if res.quant:
        q = res.quant
        line = (f"int8 gates on {q['samples']} held-out images: agreement with float {q['top1_agreement']:.3f} "
                f"(min {q['min_agreement']:g})")
        if q["float_accuracy"] is not None:
            line += (f"; float top-1 {q['float_accuracy']:.4f}, int8 {q['int8_accuracy']:.4f} "
                     f"(drop {q['drop_points']:.2f} points, limit {q['max_drop_points']:g}): accuracy gate "
                     f"{q['accuracy_gate']}")
        click.echo(line)
        for layer in q.get("worst_layers") or []:
            click.echo(f"  int8 error {layer['layer']} ({layer['op']}): RMSE/scale {layer['rmse_over_scale']:.2f}, "
                       f"max abs error {layer['max_abs_error']:.3g}")


@main.command("scale")
@arch_argument
@click.option("--phi", type=float, default=None, help="Compound coefficient (EfficientNet eq. 3).")
@click.option("--coefficients", default=None,
              help="w,d,r: width and depth multipliers and resolution (pixels, or a multiplier if <= 8). "
                   "With --latency-ms: alpha,beta,gamma, the depth/width/resolution bases instead of EfficientNet's.")
@click.option("--variant", default=None, help="EfficientNet preset b0..b7 (the published coefficients).")
@click.option("--alpha", type=float, default=1.2, show_default=True, help="Depth base (with --phi).")
@click.option("--beta", type=float, default=1.1, show_default=True, help="Width base (with --phi).")
@click.option("--gamma", type=float, default=1.15, show_default=True, help="Resolution base (with --phi).")
@click.option("--target", default=None, help="With --latency-ms: the device whose predicted latency is fitted.")
@click.option("--latency-ms", type=float, default=None,
              help="Fit phi so that the scaled net's predicted latency on --target is closest under this budget.")
@click.option("--step", type=float, default=0.25, show_default=True, help="With --latency-ms: the phi grid step.")
@click.option("--measure/--no-measure", default=True, show_default=True,
              help="With --latency-ms on a target this machine can run (host): also time the result (LiteRT).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write the scaled ArchSpec as YAML.")
def scale_cmd(arch, width, resolution, phi, coefficients, variant, alpha, beta, gamma, target, latency_ms, step,
              measure, as_json, output):
    """Compound-scale ARCH: --phi N, --coefficients w,d,r, --variant b0..b7, or --target D --latency-ms T
    (the phi whose predicted latency on D is closest under T)."""
    from hwnas.errors import SpecError
    from hwnas.export import scaling
    from hwnas.nn.count import count
    from hwnas.zoo import load_arch

    def numbers(text: str, what: str) -> tuple[float, float, float]:
        try:
            a, b, c = (float(v) for v in text.split(","))
        except ValueError:
            raise SpecError(f"expected --coefficients {what} (three numbers), got '{text}'",
                            field="coefficients") from None
        return a, b, c

    spec = load_arch(arch, width=width, resolution=resolution)
    fit = None
    if latency_ms is not None or target is not None:
        if latency_ms is None or target is None:
            raise SpecError("fitting to a latency budget needs both --target and --latency-ms")
        if phi is not None or variant is not None:
            raise SpecError("--latency-ms chooses phi itself: drop --phi/--variant")
        if coefficients is not None:
            alpha, beta, gamma = numbers(coefficients, "alpha,beta,gamma")
        fit = scaling.fit_latency(spec, target, latency_ms, alpha=alpha, beta=beta, gamma=gamma, step=step)
        scaled = fit.arch
    else:
        given = [x is not None for x in (phi, coefficients, variant)]
        if sum(given) != 1:
            raise SpecError("give exactly one of --phi, --coefficients w,d,r, --variant b0..b7, or --target with "
                            "--latency-ms")
        if phi is not None:
            scaled = scaling.scale(spec, phi, alpha, beta, gamma)
        elif variant is not None:
            scaled = scaling.efficientnet_variant(spec, variant)
        else:
            scaled = scaling.scale_coefficients(spec, *numbers(coefficients, "w,d,r"))
    if output:
        scaled.save(output)
    base, new = count(spec), count(scaled)
    info = {"name": scaled.name, "resolution": scaled.resolution, "blocks": len(scaled.blocks),
            "params": new.params, "macs": new.macs, "base_params": base.params, "base_macs": base.macs,
            "arch": scaled.to_compact(), "output": output}
    measured = None
    if fit is not None:
        info.update({"target": target, "latency_budget_ms": latency_ms, "phi": fit.phi, "step": fit.step,
                     "width": fit.width, "depth": fit.depth, "predicted_latency_ms": fit.latency_ms,
                     "next_phi_latency_ms": fit.next_latency_ms, "provenance": fit.provenance,
                     "alpha": alpha, "beta": beta, "gamma": gamma, "tried": fit.tried})
        if measure:
            measured = scaling.measure_latency(scaled, target)
            info["measured_latency_ms"] = measured
    if as_json:
        print_json(info)
        return
    if fit is not None:
        click.echo(f"phi {fit.phi:g} (step {fit.step:g}; alpha {alpha:g}, beta {beta:g}, gamma {gamma:g}): "
                   f"resolution {fit.resolution}, width x{fit.width:.3f}, depth x{fit.depth:.3f}, "
                   f"MACs {fmt_millions(new.macs)}, params {fmt_millions(new.params)}")
        nxt = "" if fit.next_latency_ms is None else f"; phi {fit.phi + fit.step:g} would take {fit.next_latency_ms:.2f} ms"
        click.echo(f"predicted latency on {target}: {fit.latency_ms:.2f} ms (budget {latency_ms:g} ms{nxt})")
        click.echo(f"provenance: {fit.provenance}")
        if measured is not None:
            click.echo(f"measured latency on this machine (LiteRT, random weights): {measured:.2f} ms (median)")
    print_table(f"{spec.name or 'arch'} -> {scaled.name}", ["", "resolution", "blocks", "params", "MACs"],
                [["base", spec.resolution, len(spec.blocks), fmt_millions(base.params), fmt_millions(base.macs)],
                 ["scaled", scaled.resolution, len(scaled.blocks), fmt_millions(new.params),
                  fmt_millions(new.macs)]], right=["resolution", "blocks", "params", "MACs"])
    if output:
        click.echo(f"wrote {output}")
    else:
        click.echo(scaled.to_compact())
