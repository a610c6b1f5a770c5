"""``hwnas profile``, ``hwnas predict``, ``hwnas devices`` and ``hwnas table show|import|diff|estimate|fit-costmodel``."""

from __future__ import annotations

from pathlib import Path

import click

from hwnas.cli import main
from hwnas.cli.common import RESOLUTION, WIDTH, arch_argument, print_json, print_table, strict_option


def _table_label(table, dev) -> str:
    """A table's label as its file names it (``<device>-<label>-<res>.yaml``, e.g. ``mobilenetv2-w0.5-c1-k10``
    for a search's space), else its space."""
    stem = Path(table.path).stem if table.path else ""
    res = "-" + "-".join(map(str, table.meta.resolutions))
    for name in [dev.name, *dev.aliases]:
        if stem.startswith(name + "-") and stem.endswith(res) and len(stem) > len(name) + len(res) + 1:
            return stem[len(name) + 1:-len(res)]
    return table.meta.space


@main.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices_cmd(as_json: bool) -> None:
    """List the devices with their backend, transport and the latency tables available for each."""
    from hwnas.latency.costmodel import describe_fit
    from hwnas.latency.devices import list_devices
    from hwnas.latency.correction import load_correction
    from hwnas.latency.store import foreign_machine
    from hwnas.latency.table import find_tables

    rows = []
    errors: list[str] = []
    find_tables(errors=errors)
    for err in errors:
        click.echo(f"hwnas: warning: skipped {err}", err=True)
    from hwnas.errors import TableError

    for dev in list_devices():
        try:
            tables = find_tables(dev.name, aliases=dev.aliases)
        except TableError as err:  # a corrupt table of this device: listed, not fatal for the whole listing
            click.echo(f"hwnas: warning: {dev.name}: {err}", err=True)
            tables = []
        rows.append({"name": dev.name, "aliases": dev.aliases, "kind": dev.kind, "backend": dev.backend,
                     "transport": dev.transport.kind, "threads": dev.threads, "precision": dev.precision,
                     "priced_by": "cost model (estimated)" if dev.estimated else "tables",
                     "estimate_rests_on": describe_fit(dev.cost_model) if dev.cost_model else None,
                     "tables": [{"space": t.meta.space, "label": _table_label(t, dev), "resolutions": t.meta.resolutions,
                                 "provenance": t.meta.provenance.split(":")[0], "path": str(t.path),
                                 "other_machine": foreign_machine(t, dev),
                                 "fidelity": ({k: v for k, v in t.meta.fidelity.items() if k != "rows"}
                                              if t.meta.fidelity else None)} for t in tables]})
        try:
            corr, why = load_correction(dev)
        except TableError as err:
            corr, why = None, str(err)
        rows[-1]["correction"] = corr.summary() if corr else why
    if as_json:
        print_json(rows)
        return
    print_table("devices", ["name", "aliases", "kind", "backend", "transport", "threads", "priced by", "tables"],
                [[r["name"], ",".join(r["aliases"]) or "-", r["kind"], r["backend"], r["transport"], r["threads"],
                  r["priced_by"],
                  " ".join(f"{t['label']}@{'/'.join(map(str, t['resolutions']))}({t['provenance']}"
                           + (", other machine" if t["other_machine"] else "")
                           + (f", checked {100 * t['fidelity']['within_10pct']:.0f} % ±10 % τ {t['fidelity']['kendall_tau']:.2f}"
                              if t["fidelity"] else "") + ")"
                           for t in r["tables"]) or "-"] for r in rows], right=["threads"])
    for r in rows:
        if r["estimate_rests_on"]:
            click.echo(f"{r['name']}: estimate rests on: {r['estimate_rests_on']}")
        if r["correction"]:
            click.echo(f"{r['name']}: {r['correction']}")
        for t in r["tables"]:
            if t["other_machine"]:
                click.echo(f"{r['name']}: {Path(t['path']).name} was {t['other_machine']}")


@main.command("profile")
@click.option("--device", "device", required=True, help="Device name or alias (hwnas devices).")
@click.option("--space", default=None,
              help="Search space, taken literally as by hwnas search [default: mobilenetv2].")
@click.option("--resolution", type=RESOLUTION, default=None, help="Input resolution [default: 32, as hwnas search; "
                                                            "with --arch: the architecture's].")
@click.option("--width", type=WIDTH, default=None, help="Width multiplier [default: 0.5, as hwnas search; with "
                                                         "--arch: the architecture's].")
@click.option("--data", default=None, help="Take input channels and classes from this data set, as hwnas search "
                                           "does [default: mnist5k].")
@click.option("--in-channels", "in_channels", type=int, default=None, help="Input channels (instead of --data's).")
@click.option("--classes", type=int, default=None, help="Classifier outputs (instead of --data's).")
@click.option("--arch", "arch_ref", default=None, help="Only this architecture's keys (zoo name, compact string "
                                                       "or YAML file).")
@click.option("--from-run", "from_run", type=click.Path(exists=True, file_okay=False), default=None,
              help="The keys of a search run's space (its run folder).")
@click.option("--remeasure", is_flag=True, help="Measure every wanted key, also those the device's tables hold.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Table path (default $HWNAS_HOME/latency_tables/<device>-<space...>-<res>.yaml).")
@click.option("--limit", type=int, default=None, help="Measure at most N op keys (a slice).")
@click.option("--repeats", type=int, default=None, help="Timed runs per op (default: the device's).")
@click.option("--warmup", type=int, default=None, help="Untimed runs per op (default: the device's).")
@click.option("--calibrate", type=int, default=0, show_default=True,
              help="Measure N random members (or --arch) end to end and fit the calibration.")
@click.option("--serial", default=None, help="adb serial (overrides the device's).")
@click.option("--check", "check", is_flag=True,
              help="Then measure a few random members end to end (adb: benchmark_model --enable_op_profiling) and "
                   "report the per-op sum vs end-to-end error: does per-op summing hold on this device?")
@click.option("--check-members", type=int, default=3, show_default=True, help="Members measured by --check.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def profile_cmd(device, space, resolution, width, data, in_channels, classes, arch_ref, from_run, remeasure, out,
                limit, repeats, warmup, calibrate, serial, check, check_members, as_json) -> None:
    """Measure on DEVICE the op keys its latency tables lack, for a search space, an architecture or a run.

    The space options are hwnas search's, with its defaults: `hwnas profile --device D OPTIONS` followed
    by `hwnas search --target D OPTIONS` finds every key it needs (the space's, plus the MobileNetV2 that
    sets the default budget). Keys any table of the device already holds are skipped (the device's tables
    form one key store, see docs/latency.md). Progress is journalled per op (<out>.journal.jsonl); rerun
    the same command to resume.
    """
    from hwnas.errors import ConfigError
    from hwnas.latency.devices import get_device
    from hwnas.profile import profile
    from hwnas.profile.run import arch_request, run_request, search_space_of, space_request

    chosen = [n for n, v in (("--space", space), ("--arch", arch_ref), ("--from-run", from_run)) if v]
    if len(chosen) > 1:
        raise ConfigError(f"give one of --space, --arch, --from-run (got {', '.join(chosen)})")
    dev = get_device(device)
    if from_run:
        request = run_request(from_run, device=dev)
    elif arch_ref:
        from hwnas.zoo import load_arch

        a = load_arch(arch_ref, width=width, resolution=resolution)
        if in_channels is not None or classes is not None:
            a = a.with_classes(classes or a.classifier.num_classes, in_channels or a.in_channels)
        request = arch_request(a)
    else:
        from hwnas.search.pipeline import SearchConfig

        d = SearchConfig()
        sp = search_space_of(space or d.space, resolution=resolution or d.resolution,
                             width=width if width is not None else d.width, data=data or d.data,
                             in_channels=in_channels, classes=classes, device=dev)
        request = space_request(sp, reference=True)
    transport = None
    if serial:
        from hwnas.profile.tflite_adb import AdbTransport

        transport = AdbTransport(serial)
    res = profile(dev, request=request, only_missing=not remeasure, out=out, limit=limit, repeats=repeats,
                  warmup=warmup, calibrate=calibrate, transport=transport, progress=not as_json)
    summary = {"table": str(res.path) if res.path else None, "journal": str(res.journal) if res.journal else None,
               "keys": res.wanted, "skipped_in_store": res.skipped, "entries": len(res.table) if res.table else 0,
               "measured_now": len(res.measured), "resumed": res.resumed, "seconds": round(res.seconds, 1),
               "provenance": res.table.meta.provenance if res.table else None,
               "calibration": res.table.calibration.report if res.table and res.table.calibration else None,
               "remeasured": res.remeasured, "check": res.check.lines() if res.check else []}
    sum_check = None
    if check:
        import random

        from hwnas.latency.store import KeyStore
        from hwnas.profile.check import check_per_op_sum
        from hwnas.profile.run import make_runner

        rng = random.Random(0)
        archs = ([request.space.decode(request.space.sample(rng)) for _ in range(check_members)]
                 if request.space is not None else [request.arch])
        sum_check = check_per_op_sum(dev, KeyStore.for_device(dev).as_table(), archs=archs,
                                     runner=make_runner(dev, transport))
        summary["per_op_sum_check"] = sum_check.to_dict()
    if as_json:
        print_json(summary)
        return
    click.echo(f"{request.label} at {request.resolution}px: {res.wanted} op keys, {res.skipped} already in "
               f"{dev.name}'s latency tables (skipped)")
    if res.table is None or (not res.measured and not res.resumed and not calibrate):
        click.echo("nothing to measure" + (f"; {res.path} unchanged" if res.path else ""))
    else:
        click.echo(f"wrote {res.path}: {len(res.table)} entries ({len(res.measured)} measured now, "
                   f"{res.resumed} from the journal) in {res.seconds:.1f} s")
    if res.path is not None and res.path.with_name(res.path.name + ".log").is_file():
        click.echo(f"TensorFlow/LiteRT log: {res.path.with_name(res.path.name + '.log')}")
    if res.remeasured:
        click.echo(f"re-measured once (inversion or high spread): {len(res.remeasured)} op(s)")
    for line in (res.check.lines() if res.check else []):
        click.echo(f"  check: {line}")
    for line in (sum_check.lines() if sum_check else []):
        click.echo(line)


@main.command("predict")
@arch_argument
@strict_option
@click.option("--target", required=True, help="Device name or alias (pixel1, pixel, host, ...).")
@click.option("--table", "table_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use only this table (checked against the target and resolution) instead of the device's "
                   "key store.")
@click.option("--fallback", is_flag=True, help="Price missing keys by the nearest key scaled by MACs (reported).")
@click.option("--no-profile", "no_profile", is_flag=True,
              help="On a device with a local runner (host), refuse to measure missing keys first; fail with the "
                   "hwnas profile command instead.")
@click.option("--measure", is_flag=True,
              help="Also measure the whole model end to end on the target (same runner, warm-up and repeats as "
                   "its tables) and print the prediction's error.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: latency_ms, energy_mj, per_block, provenance, ...")
def predict_cmd(arch, width, resolution, target, table_path, fallback, no_profile, measure, as_json) -> None:
    """Predict the latency (ms) and energy (mJ) of ARCH (a zoo name, a compact string or a YAML file) on a
    device, block by block.

    Keys are looked up in the device's key store (all its tables; the source column names the table of
    each block). On a device with a local runner (host), keys no table holds are measured first and kept
    in a new table under $HWNAS_HOME/latency_tables (--no-profile refuses); elsewhere the error names the
    hwnas profile command that measures them.
    """
    from hwnas.latency.devices import get_device
    from hwnas.latency.predict import load_predictor
    from hwnas.zoo import load_arch

    from hwnas.latency.predict import check_resolution

    if resolution is not None:
        check_resolution(resolution)
    a = load_arch(arch, width=width, resolution=resolution)
    check_resolution(a.resolution, option="the architecture's resolution")
    dev = get_device(target)
    if table_path:
        predictor = load_predictor(dev, resolution=a.resolution, table=table_path, fallback=fallback)
    else:
        if not fallback:
            from hwnas.profile.run import arch_request, ensure_keys

            opts = "".join(f" --{n} {v:g}" for n, v in (("resolution", resolution), ("width", width)) if v is not None)
            ensure_keys(dev, arch_request(a), command=f"hwnas profile --device {dev.name} --arch '{arch}'{opts}",
                        allow_profile=not no_profile, progress=not as_json, what=f"'{a.name or arch}'",
                        say=(lambda s: None) if as_json else (lambda s: click.echo(s, err=True)))
        predictor = load_predictor(dev, fallback=fallback)
        for msg in predictor.store.skipped:
            click.echo(f"hwnas: warning: skipped {msg}", err=True)
    pred = predictor.predict(a)
    report = None
    if measure:
        from hwnas.profile.run import measurable, measure_model, measurement_report

        why = measurable(dev)
        m = None if why else measure_model(dev, arch=a)
        report = measurement_report(dev, pred.latency_ms, m, note=why)
    if as_json:
        print_json({"arch": a.name or arch, "resolution": a.resolution, "width": a.width_multiplier,
                    **pred.to_dict(), **(report or {})})
        return
    mj = "mJ (declared)" if pred.energy_declared else "mJ"
    print_table(f"{a.name or 'arch'} @ {a.resolution}px, width {a.width_multiplier:g} on {pred.device}",
                ["layer", "op key", "ms", mj, "source"],
                [[b.name, b.key, f"{b.latency_ms:.3f}", "-" if b.energy_mj is None else f"{b.energy_mj:.3f}",
                  b.source] for b in pred.per_block], right=["ms", mj])
    click.echo(f"latency {pred.latency_ms:.2f} ms, energy {pred.energy.label()}")
    if pred.fidelity:
        from hwnas.profile.check import fidelity_line

        click.echo(f"table {fidelity_line(pred.fidelity)}")
    for w in pred.warnings:
        click.echo(f"hwnas: warning: {w}", err=True)
    if pred.calibration:
        where = f" (from {pred.calibration['table']})" if pred.calibration.get("table") else ""
        click.echo(f"calibration: scale {pred.calibration['scale']:.4f}, offset {pred.calibration['offset_ms']:.3f} ms"
                   f"{where}" + "".join(f"; {n}: scale {c['scale']:.4f} on its {c['ops']} op(s) only"
                                        for n, c in pred.calibration.get("per_table", {}).items() if where))
    if pred.fallback:
        click.echo(f"fallback used for {len(pred.fallback)} key(s): {', '.join(pred.fallback)}")
        click.echo(f"share of the total priced by fallback: {100 * pred.fallback_share:.0f} %")
        if pred.fallback_warning():
            click.echo(f"hwnas: warning: {pred.fallback_warning()}", err=True)
    click.echo(f"provenance: {pred.provenance}")
    if report is not None:
        click.echo(_measured_line(pred.latency_ms, report))


def _measured_line(predicted_ms: float, r: dict) -> str:
    if r["measured_latency_ms"] is None:
        return r["measurement_note"]
    return (f"measured {r['measured_latency_ms']:.3f} ms (p10 {r['measured_p10_ms']:.3f}, p90 "
            f"{r['measured_p90_ms']:.3f}, {r['measured_samples']} runs); predicted {predicted_ms:.3f} ms is "
            f"{r['prediction_error_pct']:+.1f} % off")


@main.group("table")
def table_group() -> None:
    """Show, import, compare and estimate latency tables."""


def _load_any(ref: str):
    from hwnas.latency.table import LatencyTable, find_tables

    if Path(ref).is_file():
        return [LatencyTable.load(ref)]
    if ref.endswith((".yaml", ".yml", ".json")) or "/" in ref:
        from hwnas.errors import TableError

        raise TableError(f"{ref}: no such table file")
    from hwnas.latency.devices import get_device

    dev = get_device(ref)
    errors: list[str] = []
    tables = find_tables(dev.name, aliases=dev.aliases, errors=errors)
    for err in errors:
        click.echo(f"hwnas: warning: skipped {err}", err=True)
    return tables


@table_group.command("show")
@click.argument("ref")
@click.option("--entries", is_flag=True, help="List every entry.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def table_show(ref: str, entries: bool, as_json: bool) -> None:
    """Show a table file (or every table of a device): metadata, calibration, entries."""
    tables = _load_any(ref)
    if as_json:
        print_json([{**t.summary(), "meta": t.meta.model_dump(),
                     "calibration": t.calibration.model_dump() if t.calibration else None,
                     **({"entries": {k: e.model_dump() for k, e in t.entries.items()}} if entries else {})}
                    for t in tables])
        return
    if not tables:
        click.echo(f"no tables for '{ref}'")
    for t in tables:
        m = t.meta
        click.echo(f"{t.path}\n  device {m.device}, space {m.space}, resolutions {m.resolutions}, backend "
                   f"{m.backend} {m.backend_version or ''}, threads {m.threads}, governor {m.governor}, "
                   f"date {m.date}\n  provenance: {m.provenance}\n  entries: {len(t)}")
        if m.notes:
            click.echo(f"  notes: {m.notes}")
        if t.calibration:
            c = t.calibration
            click.echo(f"  calibration: scale {c.scale:.4f}, offset {c.offset_ms:.3f} ms on {len(c.points)} "
                       f"points, {c.report}")
        if entries:
            print_table(None, ["op key", "median ms", "p10", "p90", "n", "mJ"],
                        [[k, f"{e.median_ms:.4f}", "-" if e.p10_ms is None else f"{e.p10_ms:.4f}",
                          "-" if e.p90_ms is None else f"{e.p90_ms:.4f}", e.samples,
                          "-" if e.energy_mj is None else f"{e.energy_mj:.4f}"] for k, e in t.entries.items()],
                        right=["median ms", "p10", "p90", "n", "mJ"])


@table_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", required=True, type=click.Choice(["proxylessnas", "ofa"]), help="Foreign format.")
@click.option("--device", default=None, help="Device recorded (default pixel1 / note10).")
@click.option("--space", default=None, help="Space recorded (default mobilenetv2 / ofa-mbv3-w1.2).")
@click.option("--resolution", type=RESOLUTION, default=None, help="Resolution (default: from the stem key).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Output table path.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def table_import(file, fmt, device, space, resolution, out, as_json) -> None:
    """Convert a published LUT (ProxylessNAS / once-for-all) into an hwnas table; unmapped keys are listed."""
    from hwnas.latency.importers import import_table
    from hwnas.latency.table import table_filename, user_table_dir

    table, report = import_table(file, fmt, device=device, space=space, resolution=resolution)
    m = table.meta
    out = Path(out) if out else user_table_dir() / table_filename(m.device, m.space, m.resolutions[0])
    table.save(out)
    if as_json:
        print_json({"table": str(out), "entries": len(table), **report.to_dict()})
        return
    click.echo(f"wrote {out}: {len(table)} entries ({len(report.mapped)} mapped, {len(report.composed)} composed)")
    for k, parts in report.composed.items():
        click.echo(f"  composed {k} = {' + '.join(parts)}")
    if report.unmapped:
        click.echo(f"unmapped keys ({len(report.unmapped)}):")
        for k, why in report.unmapped.items():
            click.echo(f"  {k}: {why}")
    else:
        click.echo("unmapped keys: none")


@table_group.command("diff")
@click.argument("a", type=click.Path(exists=True, dir_okay=False))
@click.argument("b", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def table_diff(a, b, as_json) -> None:
    """Compare two tables: keys only in one, and the ratio B/A of the medians for shared keys."""
    from hwnas.latency.table import LatencyTable, diff_tables

    d = diff_tables(LatencyTable.load(a), LatencyTable.load(b))
    if as_json:
        print_json(d)
        return
    click.echo(f"shared {d['shared']}, only in A {len(d['only_a'])}, only in B {len(d['only_b'])}")
    if d["median_ratio"] is not None:
        click.echo(f"B/A median ratio {d['median_ratio']:.3f} (min {d['min_ratio']:.3f}, max {d['max_ratio']:.3f})")
    for k in d["only_a"][:20]:
        click.echo(f"  only in A: {k}")
    for k in d["only_b"][:20]:
        click.echo(f"  only in B: {k}")


@table_group.command("estimate")
@click.option("--device", required=True, help="An estimated device (with a cost model), e.g. pixel1.")
@click.option("--space", required=True, help="Space whose op keys are priced.")
@click.option("--resolution", type=RESOLUTION, required=True, help="Input resolution.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output path (default: the shipped latency_tables/<device>-<space>-<res>.yaml).")
def table_estimate(device, space, resolution, out) -> None:
    """Materialise an estimated device's cost model as a table (provenance 'estimated: ...')."""
    from hwnas.latency.costmodel import estimate_table
    from hwnas.latency.devices import PACKAGE_DATA
    from hwnas.latency.table import table_filename

    table = estimate_table(device, space, resolution)
    m = table.meta
    path = Path(out) if out else PACKAGE_DATA / "latency_tables" / table_filename(m.device, m.space, resolution)
    table.save(path)
    click.echo(f"wrote {path}: {len(table)} entries ({m.provenance})")


@table_group.command("fit-costmodel")
@click.option("--device", required=True, help="Device file to refit (e.g. pixel1).")
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False),
              help="The public data folder (../shared/data); the device's cost_model section names the sources.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit report as JSON.")
def table_fit(device, data_root, as_json) -> None:
    """Refit an estimated device's cost-model parameters and rewrite its cost_model section."""
    from hwnas.latency.costmodel import refit_device
    from hwnas.latency.devices import get_device

    dev = get_device(device)
    report = refit_device(dev.source, data_root)
    if as_json:
        print_json(report)
        return
    for r in report["rows"]:
        click.echo(f"  {r['model']:<24} published {r['published_ms']:>7.1f} ms  estimate {r['estimate_ms']:>8.2f} ms "
                   f"({r['error_pct']:+.2f} %)")
    for name, e in report.get("per_source", {}).items():
        click.echo(f"  {name:<22} n={e['n']:<5} within ±10 % {100 * e['within_10pct']:5.1f} %  MAPE {e['mape_pct']:5.1f} %"
                   f"  Spearman {e['spearman']:.3f}  factor {e['factor']:g}")
    click.echo(f"max |error| {report['max_abs_error_pct']} %, RMSPE {report['rmspe_pct']} % -> {dev.source}")
