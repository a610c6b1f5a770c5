"""``hwnas search``: hardware-aware architecture search end to end (thin wrapper over
:func:`hwnas.search.pipeline.run_search`)."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from hwnas.cli import main
from hwnas.cli.common import WIDTH, print_json, print_table, strict_option



@contextlib.contextmanager
def _stdout_to_stderr(active: bool):
    """Point file descriptor 1 at stderr while ``active`` (C-level prints included)."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@main.command("search")
@strict_option
@click.option("--target", default=None, help="Device name or alias (e.g. pixel); see `hwnas devices`. "
                                             "Required unless --resume.")
@click.option("--space", default="mobilenetv2", show_default=True,
              help="Search space, taken literally (see `hwnas spaces`; -cifar names are the small-input variants). "
                   "Stage-wise spaces (mnasnet, efficientnet) are searched per layer by fbnet/proxyless/singlepath.")
@click.option("--method", default="proxyless", show_default=True,
              help="fbnet | proxyless | singlepath (differentiable), mnasnet | evolution | random, or nsga2 "
                   "(multi-objective: the whole Pareto front, front.yaml).")
@click.option("--latency-ms", type=float, default=None,
              help="Latency budget on the target in ms [default: MobileNetV2's at the same width/resolution].")
@click.option("--data", default="mnist5k", show_default=True,
              help="mnist5k | digits | imagefolder:PATH | cifar10:PATH | npz:PATH (never downloaded).")
@click.option("--resolution", type=int, default=32, show_default=True, help="Input resolution (pixels).")
@click.option("--width", type=WIDTH, default=0.5, show_default=True, help="Width multiplier of the space.")
@click.option("--epochs", type=int, default=6, show_default=True, help="Search epochs.")
@click.option("--warmup-epochs", type=int, default=2, show_default=True,
              help="Of the search epochs, weight-only warm-up epochs.")
@click.option("--steps-per-epoch", type=int, default=None, help="Cap on steps per epoch (quick runs).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--final-epochs", type=int, default=6, show_default=True, help="Training epochs of the final model.")
@click.option("--final", type=click.Choice(["finetune", "scratch"]), default="finetune", show_default=True,
              help="Fine-tune the inherited weights (after BN recalibration) or train from scratch.")
@click.option("--lr", type=float, default=None, help="Weight learning rate during search.")
@click.option("--arch-lr", type=float, default=None, help="Architecture learning rate.")
@click.option("--objective", default=None,
              help="proxyless: the loss form, mul_log (default) or add; mnasnet/evolution/random: the costs of "
                   "MnasNet's weighted-product reward, e.g. latency,energy; nsga2: the costs beside accuracy "
                   "(latency, energy, params, macs).")
@click.option("--hard/--soft", default=None,
              help="Hard latency constraint (no latency pressure below the budget) or the paper's soft one "
                   "[default: hard for the default proxyless objective, soft otherwise].")
@click.option("--quantize", type=click.Choice(["int8", "float16"]), default=None, help="Quantize the .tflite.")
@click.option("--samples", type=int, default=100, show_default=True,
              help="Architectures evaluated by mnasnet/evolution/random/nsga2.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="PyTorch CPU threads.")
@click.option("--workers", type=int, default=None,
              help="DataLoader worker processes decoding images [default: 0 for in-memory data, min(4, CPU cores) for imagefolder].")
@click.option("--augment", type=click.Choice(["auto", "imagenet", "small"]), default="auto", show_default=True,
              help="Transforms: imagenet (RandomResizedCrop + flip; eval resize/0.875 + centre crop), small "
                   "(pad-crop + flip, for 32-px data); auto: imagenet for imagefolder, else small.")
@click.option("--device", "train_device", default="auto", show_default=True,
              help="Where the supernet and the final model train: auto (CUDA when available, else CPU), cpu, "
                   "cuda, cuda:N or mps. Recorded in result.json.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Training precision: autocast to bf16 (CPU or GPU) or fp16 (CUDA, with loss scaling).")
@click.option("--force", is_flag=True,
              help="Train even when the pre-flight check estimates that the batch does not fit in memory.")
@click.option("--data-limit", type=int, default=None, help="Use only this many images (quick runs).")
@click.option("--max-seconds", type=float, default=None, help="Stop the search after this many seconds.")
@click.option("--out", default=None, help="Run folder [default: runs/<method>-<target>-<time>].")
@click.option("--resume", "resume", default=None, help="Continue the run in this folder (other options ignored).")
@click.option("--option", "-o", "extra", multiple=True, metavar="KEY=VALUE",
              help="Searcher option (repeatable), e.g. -o noise=sample (FBNet per-sample Gumbel noise), "
                   "-o arch_every=1, -o weights=independent; values are parsed as YAML scalars.")
@click.option("--recipe", default=None,
              help="Hyperparameter preset for a real search (explicit options win): proxyless-imagenet, "
                   "proxyless-imagenet100, fbnet-imagenet100; see docs/search-at-scale.md.")
@click.option("--no-profile", "no_profile", is_flag=True,
              help="Refuse to measure missing op keys first (on a device with a local runner, e.g. host); fail "
                   "with the hwnas profile command instead.")
@click.option("--json", "as_json", is_flag=True, help="Print result.json instead of the summary table.")
@click.option("--quiet", is_flag=True, help="No progress bars or status lines.")
def search_cmd(target, space, method, latency_ms, data, resolution, width, epochs, warmup_epochs, steps_per_epoch,
               batch_size, final_epochs, final, lr, arch_lr, objective, hard, quantize, samples, seed, threads,
               workers, augment, train_device, precision, force, data_limit, max_seconds, out, resume, extra, recipe,
               no_profile, as_json, quiet) -> None:
    """Search an architecture for TARGET, train it, export a .tflite and report.

    Writes a run folder with config.yaml, history.jsonl, checkpoints/, arch.yaml, model.pt,
    model.tflite, result.json and plots/. The bare `hwnas search --target pixel` runs the whole
    pipeline on the built-in MNIST images.
    """
    from hwnas.search.pipeline import SearchConfig, run_search, summary_rows

    if target is None and resume is None:
        raise click.UsageError("--target is required (or --resume RUN)")

    import yaml

    options = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got '{item}'", param_hint="--option")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    preset: dict = {}
    if recipe is not None:  # fills what the command line left at its default
        from hwnas.search.recipes import recipe_config

        ctx = click.get_current_context()
        preset = {k: v for k, v in recipe_config(recipe, int(os.environ.get("WORLD_SIZE", "1"))).items()
                  if k in ("options", "recipe", "final_lr")
                  or ctx.get_parameter_source(k) is not click.core.ParameterSource.COMMANDLINE}
        options = {**preset.pop("options", {}), **options}
    cfg = SearchConfig(target=target or "pixel", space=space, method=method, latency_ms=latency_ms, data=data,
                       resolution=resolution, width=width, epochs=epochs, warmup_epochs=warmup_epochs,
                       steps_per_epoch=steps_per_epoch, batch_size=batch_size, final_epochs=final_epochs, final=final,
                       lr=lr, arch_lr=arch_lr, objective=objective, hard=hard, quantize=quantize, samples=samples,
                       seed=seed, threads=threads, workers=workers, augment=augment, device=train_device,
                       precision=precision, force=force, data_limit=data_limit, max_seconds=max_seconds, out=out,
                       profile=not no_profile,
                       options=options)
    for key, value in preset.items():
        if not (key == "final_lr" and cfg.final_lr is not None):
            setattr(cfg, key, value)
    echo = None if quiet or as_json else (lambda s: click.echo(s, err=True))
    with _stdout_to_stderr(as_json):  # native libraries (LiteRT, TF) print to fd 1; keep JSON output clean
        res = run_search(cfg, resume=resume, progress=False if quiet or as_json else None, echo=echo)
    if res.get("rank"):  # torchrun: rank 0 alone prints
        return
    if as_json:
        print_json(res)
        return
    print_table("hwnas search", ["", "value"], summary_rows(res))
