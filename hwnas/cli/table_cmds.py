"""``hwnas table check``: how well a device's table predicts whole networks, measured end to end."""

from __future__ import annotations

import click

from hwnas.cli.common import RESOLUTION, WIDTH, print_json
from hwnas.cli.latency_cmds import table_group


@table_group.command("check")
@click.option("--device", required=True, help="Device name or alias with a runner (host, or a phone over adb).")
@click.option("--space", default=None, help="Space of the table to check (default: the device's only measured one).")
@click.option("--resolution", type=RESOLUTION, default=None, help="Resolution of the table (default: its only one).")
@click.option("--width", type=WIDTH, default=None,
              help="Width multiplier of the space, as the search used it [default: 1, or the run's].")
@click.option("--in-channels", "in_channels", type=int, default=None,
              help="Input channels of the space, as the search used them [default: 3, or the run's].")
@click.option("--classes", type=int, default=None,
              help="Classifier outputs of the space, as the search used them [default: 1000, or the run's].")
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="Check the space a search run used (its run folder: space, resolution, width, channels, "
                   "classes).")
@click.option("--table", "table_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Check this table file instead of looking one up.")
@click.option("--members", type=click.IntRange(2, None), default=20, show_default=True,
              help="Random members of the space measured end to end.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the member draw.")
@click.option("--repeats", type=click.IntRange(1, None), default=None, help="Timed runs per member (default: the device's).")
@click.option("--no-save", is_flag=True, help="Do not store the result in the table's metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def table_check(device, space, resolution, width, in_channels, classes, from_run, table_path, members, seed, repeats,
                no_save, as_json) -> None:
    """Measure N random members of a measured table's space end to end on DEVICE and print share within
    ±10 %, RMSPE, Spearman and Kendall τ of the table's predictions (calibration included).

    The members are drawn from the space a search used: --space/--resolution with --width, --in-channels
    and --classes as given to hwnas search (or all of them from --from-run RUN); the table checked is
    then a measured table of the device that holds every op key of that space.

    The result is stored in the table's metadata (``meta.fidelity``); ``hwnas devices`` and
    ``hwnas predict`` show it, and predictions warn when the share or τ is below the thresholds
    (90 % / 0.8). Estimated devices (cost models) have nothing to measure here.
    """
    from hwnas.errors import MissingOpError, TableError
    from hwnas.latency.devices import get_device
    from hwnas.latency.table import LatencyTable, find_tables
    from hwnas.profile.check import FIDELITY_MIN_KENDALL_TAU, FIDELITY_MIN_WITHIN_10PCT, check_table, fidelity_warning

    dev = get_device(device)
    sp = None
    if from_run:
        from hwnas.errors import ConfigError
        from hwnas.profile.run import run_request

        given = [n for n, v in (("--space", space), ("--resolution", resolution), ("--width", width),
                                ("--in-channels", in_channels), ("--classes", classes)) if v is not None]
        if given:
            raise ConfigError(f"--from-run takes the space from the run; drop {', '.join(given)}")
        sp = run_request(from_run, device=dev).space
    elif any(v is not None for v in (width, in_channels, classes)):
        from hwnas.errors import ConfigError
        from hwnas.spaces import resolve_space

        if space is None and not table_path:
            raise ConfigError("--width/--in-channels/--classes need --space (or --table, or --from-run RUN)")
        if resolution is None and not table_path:
            raise ConfigError("--width/--in-channels/--classes need --resolution (or --table, or --from-run RUN)")
        base = LatencyTable.load(table_path, device=dev.name) if table_path else None
        sp = resolve_space(space or base.meta.space, resolution=resolution or base.meta.resolutions[0],
                           width=width if width is not None else 1.0,
                           in_channels=in_channels if in_channels is not None else 3,
                           classes=classes if classes is not None else 1000, device=dev)
    predictor = None
    if table_path:
        table = LatencyTable.load(table_path, device=dev.name)
    elif sp is not None:
        from hwnas.profile.run import profile_command, space_label

        keys = [str(k) for k in sp.op_keys() if k.kind != "skip"]
        tables = [t for t in find_tables(dev.name, sp.name, sp.resolution, dev.aliases)
                  if not t.meta.estimated and all(k in t for k in keys)]
        if not tables:  # the keys may be spread over several tables (a search profiles what is missing)
            from hwnas.latency.predict import load_predictor

            store_pred = load_predictor(dev)
            if not store_pred.store.missing(keys) and store_pred.store.measured:
                counts: dict[int, list] = {}
                for k in keys:
                    t = store_pred.store.lookup(k).table
                    counts.setdefault(id(t), [t, 0])[1] += 1
                tables = [max(counts.values(), key=lambda tn: tn[1])[0]]
                predictor = store_pred
        if not tables:
            raise TableError(f"no measured table of device '{dev.name}' holds every op key of {space_label(sp)} at "
                             f"{sp.resolution} px; make one with: "
                             + (f"hwnas profile --device {dev.name} --from-run {from_run}" if from_run else
                                profile_command(dev, sp)))
        table = tables[0]
    else:
        tables = [t for t in find_tables(dev.name, space, resolution, dev.aliases) if not t.meta.estimated]
        if not tables:
            what = f" for space '{space}'" if space else ""
            raise TableError(f"device '{dev.name}' has no measured table{what} to check"
                             + (" (it is estimated by a cost model; profile it on the device first: "
                                f"hwnas profile --device {dev.name} --space S --resolution R)" if dev.estimated else
                                f"; make one with: hwnas profile --device {dev.name} --space S --resolution R"))
        found = {(t.meta.space, tuple(t.meta.resolutions)) for t in tables}
        if len(found) > 1:
            raise TableError(f"device '{dev.name}' has several measured tables "
                             f"({', '.join(f'{s}@{r[0]}' for s, r in sorted(found))}); pass --space and --resolution")
        table = tables[0]
    if repeats:
        dev = dev.model_copy(update={"repeats": repeats})
    from tqdm import tqdm

    bar = tqdm(total=members, desc="table check", unit="member", disable=as_json or None)
    try:
        report = check_table(dev, table, members=members, seed=seed, progress=lambda i, n: bar.update(1), space=sp,
                             predictor=predictor)
    except MissingOpError as e:
        if sp is not None:
            raise
        # the members were drawn at width 1, 3 channels, 1000 classes; a table `hwnas profile` made with its
        # defaults (those of hwnas search) holds another space's keys: say which flags select it
        from hwnas.profile.run import search_space_of
        from hwnas.search.pipeline import SearchConfig

        d = SearchConfig()
        ssp = search_space_of(table.meta.space, resolution=table.meta.resolutions[0], width=d.width, data=d.data)
        first = str(e).splitlines()[0].split(" (", 1)[0]  # the count, not the store's summary and the key list
        raise TableError(f"{table.path}: {first}\nThe members were drawn from {table.meta.space} at width 1, 3 input "
                         f"channels and 1000 classes (table check's defaults). A table made by hwnas profile with its "
                         f"defaults (those of hwnas search) is checked with the same flags: hwnas table check --device "
                         f"{dev.name} --space {ssp.name} --resolution {ssp.resolution} --width {ssp.width_multiplier:g} "
                         f"--in-channels {ssp.in_channels} --classes {ssp.num_classes} (or --from-run RUN for a "
                         f"search's run)") from None
    finally:
        bar.close()
    saved = None
    if not no_save:
        if table.path is None:
            raise TableError("the table has no file to store the check in; pass --no-save")
        table.meta.fidelity = report
        table.save(table.path)
        saved = str(table.path)
    summary = {k: v for k, v in report.items() if k != "rows"}
    if as_json:
        print_json({"device": dev.name, "space": table.meta.space, "resolution": table.meta.resolutions[0],
                    "table": str(table.path), "saved": saved, **report})
        return
    label = (f"{report['space']} w{report['width']:g} c{report['in_channels']} k{report['classes']}"
             f"@{report['resolution']}")
    click.echo(f"{dev.name} {label} ({table.path}), "
               f"{summary['members']} members, load average {summary['load_average']}:")
    click.echo(f"  within ±10 %  {100 * summary['within_10pct']:.1f} %   (warn below {100 * FIDELITY_MIN_WITHIN_10PCT:.0f} %)")
    click.echo(f"  RMSPE         {summary['rmspe_pct']:.2f} %")
    click.echo(f"  Spearman ρ    {summary['spearman']:.4f}")
    click.echo(f"  Kendall τ     {summary['kendall_tau']:.4f}   (warn below {FIDELITY_MIN_KENDALL_TAU})")
    warning = fidelity_warning(report)
    if warning:
        click.echo(f"hwnas: warning: {warning}", err=True)
    if saved:
        click.echo(f"stored in {saved} (meta.fidelity)")


@table_group.command("fit-correction")
@click.option("--device", required=True, help="Device name or alias whose measurements train the correction.")
@click.option("--points", "points", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL of measured networks, one {\"arch\": compact string, \"measured_ms\": ms} per line "
                   "(benchmarks/predictor_fidelity.py writes <table>.members.jsonl); repeatable.")
@click.option("--table", "tables", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also price op keys from this table of the device (besides its key store); repeatable.")
@click.option("--space", default=None, help="Also measure --members random members of this space end to end now "
                                            "(their op keys the device's tables lack are profiled first).")
@click.option("--resolution", type=RESOLUTION, default=None, help="Resolution of --space [default: 224].")
@click.option("--members", type=click.IntRange(0, None), default=20, show_default=True,
              help="Members of --space measured end to end now.")
@click.option("--holdout", type=float, default=0.3, show_default=True,
              help="Share of the networks kept out of the fit and only evaluated (reported as held_out).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the member draw and the split.")
@click.option("--grouping", type=click.Choice(["total", "kind"]), default="total", show_default=True,
              help="total: one scale, a per-op overhead and a constant; kind: a scale per op kind (SE and "
                   "h-swish/swish apart).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write it [default: $HWNAS_HOME/corrections/<device>.json, which predictions use].")
@click.option("--json", "as_json", is_flag=True, help="Print the correction as JSON.")
def table_fit_correction(device, points, tables, space, resolution, members, holdout, seed, grouping, out,
                         as_json) -> None:
    """Fit DEVICE's learned correction of per-op sums on its own end-to-end measurements.

    A linear model on each prediction's per-op raw terms (a scale — one, or per op kind with --grouping
    kind —, a per-op overhead, a term per million weights and a constant; scikit-learn, non-negative
    terms), trained only on networks
    measured on DEVICE; a share (--holdout) is kept out and reported separately from the in-sample fit.
    Written as plain JSON; predictions from DEVICE's key store then use it and say so (provenance,
    --json correction). See docs/latency.md.
    """
    import os

    from hwnas.errors import ConfigError
    from hwnas.latency.correction import correction_path, fit_correction, read_points
    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import Predictor
    from hwnas.latency.store import KeyStore
    from hwnas.latency.table import LatencyTable
    from hwnas.opkey import arch_op_keys

    dev = get_device(device)
    pts = read_points(points)
    extra = [LatencyTable.load(t, device=dev.name, device_aliases=dev.aliases) for t in tables]
    load = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    if space:
        import random

        from hwnas.profile.run import has_local_runner, make_builder, make_runner
        from hwnas.spaces import resolve_space

        if not has_local_runner(dev):
            raise ConfigError(f"device '{dev.name}' has no local runner to measure --space members; pass --points")
        from hwnas.profile.run import KeyRequest, ensure_keys, profile_command, space_label

        sp = resolve_space(space, resolution=resolution, device=dev)
        rng = random.Random(seed)
        archs = [sp.decode(sp.sample(rng)) for _ in range(members)]
        keys = list({str(k): k for a in archs for _, k in arch_op_keys(a)}.values())
        # the members' op keys the store lacks are profiled first, as hwnas predict does on the host
        ensure_keys(dev, KeyRequest(keys, f"{space_label(sp)}-members", sp.resolution, space=sp), refuse_hint=None,
                    command=profile_command(dev, sp),
                    progress=not as_json, say=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
        builder, runner = make_builder(dev), make_runner(dev)
        try:
            for arch in archs:
                pts.append((arch, runner.measure(builder.build_arch(arch)).median_ms))
        finally:
            runner.close()
        if hasattr(os, "getloadavg"):
            load.append(os.getloadavg()[0])
    if not pts:
        raise ConfigError("no measured networks: pass --points FILE or --space S --members N")
    predictor = Predictor(dev, store=KeyStore.for_device(dev, extra=extra), calibrated=False, correction=False)
    missing = predictor.missing([k for a, _ in pts for _, k in arch_op_keys(a)])
    if missing:
        raise predictor.store.missing_error(missing, what="the measured networks",
                                            command=f"hwnas table fit-correction ... --table TABLE (the table the "
                                                    f"networks' ops were measured into)")
    corr = fit_correction(dev, pts, predictor=predictor, holdout=holdout, seed=seed, grouping=grouping,
                          trained_on={"points": [str(p) for p in points], "tables": [str(t) for t in tables],
                                      "space": space, "members_measured_now": members if space else 0,
                                      "load_average": load or None})
    path = corr.save(out or correction_path(dev.name))
    if as_json:
        print_json({"path": str(path), **corr.model_dump(by_alias=True)})
        return
    click.echo(f"wrote {path}: {corr.summary()}")
    for split in ("in_sample", "held_out", "raw_in_sample", "raw_held_out"):
        r = corr.report.get(split)
        if r:
            click.echo(f"  {split:14s} {r['members']:4d} networks: {100 * r['within_10pct']:5.1f} % within ±10 %, "
                       f"RMSPE {r['rmspe_pct']:.2f} %, Spearman {r['spearman']:.4f}, mean error {r['mean_error_pct']:+.2f} %")
    click.echo("  coefficients: " + ", ".join(f"{g} x{c:.3f}" for g, c in sorted(corr.coef.items()))
               + f"; per op {corr.per_op_ms:.4f} ms; per million weights {corr.per_mparam_ms:.4f} ms; "
                 f"constant {corr.intercept_ms:.3f} ms")
