"""``hwnas ofa train`` and ``hwnas ofa specialize``: thin wrappers over :mod:`hwnas.search.ofa`."""

from __future__ import annotations

import click

from hwnas.cli import main
from hwnas.cli.common import RESOLUTION, print_json, print_table


@main.group("ofa")
def ofa_group() -> None:
    """Once-for-all: train one elastic supernet, then specialise it for many devices and latency budgets
    without retraining (Cai et al., ICLR 2020)."""


def _resolutions(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None


@ofa_group.command("train")
@click.option("--space", default="mobilenetv3", show_default=True,
              help="A stage-wise MBConv space with a depth range per stage: mobilenetv3 or mobilenetv3-cifar.")
@click.option("--data", default="mnist5k", show_default=True,
              help="mnist5k | digits | imagefolder:PATH | cifar10:PATH | npz:PATH (never downloaded).")
@click.option("--resolution", type=RESOLUTION, default=32, show_default=True,
              help="Largest input resolution (pixels): the data's, and the largest subnet's.")
@click.option("--resolutions", callback=_resolutions, default=None,
              help="Elastic resolutions, comma-separated [default: resolution-8, resolution-4, resolution].")
@click.option("--width", type=float, default=0.5, show_default=True, help="Width multiplier of the space.")
@click.option("--epochs", type=int, default=6, show_default=True, help="Training epochs (--quick: 3).")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap on steps per epoch (--quick: 25).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per step (per process).")
@click.option("--lr", type=float, default=0.05, show_default=True, help="SGD learning rate (cosine schedule).")
@click.option("--random-subnets", type=int, default=2, show_default=True,
              help="Sandwich rule: random subnets per step besides the largest and the smallest.")
@click.option("--no-kernel-transform", is_flag=True,
              help="Smaller kernels are plain centre crops (no OFA kernel transformation matrices).")
@click.option("--quick", is_flag=True, help="Quick settings: 3 epochs of at most 25 steps (explicit options win).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="PyTorch CPU threads.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes (see hwnas search).")
@click.option("--device", "train_device", default="auto", show_default=True,
              help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Training precision (autocast; fp16 with loss scaling on CUDA).")
@click.option("--data-limit", type=int, default=None, help="Use only this many images (quick runs).")
@click.option("--out", default=None,
              help="Run folder [default: runs/ofa-<space>-<data>]. Rerunning the same command resumes it.")
@click.option("--json", "as_json", is_flag=True, help="Print result.json.")
@click.option("--quiet", is_flag=True, help="No status lines.")
def ofa_train_cmd(space, data, resolution, resolutions, width, epochs, steps_per_epoch, batch_size, lr, random_subnets,
                  no_kernel_transform, quick, seed, threads, workers, train_device, precision, data_limit, out,
                  as_json, quiet) -> None:
    """Train an elastic supernet (kernel 3/5/7, expansion 3/4/6, depth per stage, resolution) with the sandwich
    rule and in-place distillation; checkpointed every epoch, resumable by rerunning the command.

    Writes config.yaml, history.jsonl, checkpoints/last.pt, supernet.pt and result.json; then run
    `hwnas ofa specialize RUN --target DEVICE --latency-ms MS`. Works under torchrun as `hwnas search` does.
    """
    from hwnas.search.ofa import QUICK, OFAConfig, train_ofa

    ctx = click.get_current_context()
    if quick:
        if ctx.get_parameter_source("epochs") is not click.core.ParameterSource.COMMANDLINE:
            epochs = QUICK["epochs"]
        if steps_per_epoch is None:
            steps_per_epoch = QUICK["steps_per_epoch"]
    cfg = OFAConfig(space=space, data=data, resolution=resolution, resolutions=resolutions, width=width, epochs=epochs,
                    steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, random_subnets=random_subnets,
                    kernel_transform=not no_kernel_transform, seed=seed, threads=threads, workers=workers,
                    device=train_device, precision=precision, data_limit=data_limit, out=out)
    echo = None if quiet or as_json else (lambda s: click.echo(s, err=True))
    res = train_ofa(cfg, echo=echo)
    if res.get("rank"):  # torchrun: rank 0 alone prints
        return
    if as_json:
        print_json(res)
        return
    if "history" not in res:
        return
    print_table("hwnas ofa train", ["", "value"], [
        ("run", res["run"]),
        ("space / subnets", f"{res['space']} / {res['subnets']:.3g} (resolutions {res['resolutions']})"),
        ("epochs × steps", f"{res['epochs']} × {res['steps_per_epoch']} ({res['rule']})"),
        ("val accuracy largest / smallest", f"{100 * (res['val_acc_largest'] or 0):.2f} % / "
                                            f"{100 * (res['val_acc_smallest'] or 0):.2f} %"),
        ("training time", f"{res['train_seconds']:.0f} s on {res.get('device', 'cpu')}"),
        ("next", f"hwnas ofa specialize {res['run']} --target pixel --latency-ms MS"),
    ])


@ofa_group.command("specialize")
@click.argument("run")
@click.option("--target", "targets", multiple=True, required=True,
              help="Device name or alias (repeatable, paired in order with --latency-ms); see `hwnas devices`.")
@click.option("--latency-ms", "budgets", type=float, multiple=True, required=True,
              help="Latency budget in ms on the --target given at the same position (repeatable).")
@click.option("--samples", type=int, default=60, show_default=True,
              help="Subnets measured (BN recalibration + validation) to train the accuracy predictor; a quarter is "
                   "held out to report its Spearman rank correlation. Kept in RUN/ofa/ and reused.")
@click.option("--evaluations", type=int, default=300, show_default=True,
              help="Subnets the evolution scores with the accuracy predictor per target.")
@click.option("--population", type=int, default=32, show_default=True, help="Evolution population.")
@click.option("--bn-batches", type=int, default=8, show_default=True,
              help="Train batches re-estimating BatchNorm statistics per subnet (16 at least for the chosen ones).")
@click.option("--fallback", is_flag=True,
              help="Price op keys a device's tables lack by the nearest key scaled by MACs (share reported).")
@click.option("--quantize", type=click.Choice(["int8", "float16"]), default=None, help="Quantize the .tflite.")
@click.option("--no-export", is_flag=True, help="Skip the .tflite export (model.pt and arch.yaml are still written).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print specialize.json.")
@click.option("--quiet", is_flag=True, help="No status lines.")
def ofa_specialize_cmd(run, targets, budgets, samples, evaluations, population, bn_batches, fallback, quantize,
                       no_export, seed, as_json, quiet) -> None:
    """Specialise the supernet in RUN for every --target/--latency-ms pair: accuracy predictor, evolution under
    the device's latency predictor, the chosen subnet extracted with its inherited weights (no retraining),
    BN-recalibrated, evaluated and exported to .tflite.

    Writes RUN/specialized/<device>-<ms>ms/ (arch.yaml, model.pt, model.tflite, result.json) and
    RUN/specialize.json; prints a summary and a Pareto table per device.
    """
    from hwnas.search.ofa import parse_targets, specialize

    echo = None if quiet or as_json else (lambda s: click.echo(s, err=True))
    res = specialize(run, parse_targets(targets, budgets), samples=samples, evaluations=evaluations,
                     population=population, bn_batches=bn_batches, fallback=fallback, quantize=quantize,
                     export=not no_export, seed=seed, echo=echo)
    if as_json:
        print_json(res)
        return
    ap = res["accuracy_predictor"]
    rho = "n/a" if ap["spearman"] is None else f"{ap['spearman']:.3f}"
    click.echo(f"accuracy predictor ({ap['samples']} subnets measured): Spearman ρ {rho} on {ap['held_out_subnets']} held-out subnets "
               f"(MAE {ap['mae_points']:.2f} points)")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    print_table("specialised subnets (inherited weights, BN-recalibrated, no retraining)",
                ["device", "budget ms", "predicted ms", "fallback", "subnet", "params", "MACs", "pred. acc %",
                 "test acc %", ".tflite acc %"],
                [(r["target"], f"{r['latency_budget_ms']:g}", f"{r['predicted_latency_ms']:.4g}",
                  f"{100 * r['latency_fallback_share']:.0f} %", r["subnet"], f"{r['params'] / 1e6:.3f}M",
                  f"{r['macs'] / 1e6:.2f}M", pct(r["predicted_accuracy"]), pct(r["test_accuracy"]),
                  pct(r["tflite_test_accuracy"]) if r["export_error"] is None else "export failed")
                 for r in res["targets"]],
                right=["budget ms", "predicted ms", "params", "MACs", "pred. acc %", "test acc %", ".tflite acc %"])
    for device, front in res["pareto"].items():
        print_table(f"{device}: Pareto front of the evaluated subnets (predicted)",
                    ["predicted ms", "pred. acc %", "subnet"],
                    [(f"{p['predicted_latency_ms']:.4g}", pct(p["predicted_accuracy"]), p["subnet"]) for p in front],
                    right=["predicted ms", "pred. acc %"])
    click.echo(f"wrote {res['run']}/specialize.json")
