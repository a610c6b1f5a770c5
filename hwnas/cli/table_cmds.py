"""``hwnas table check``: how well a device's table predicts whole networks, measured end to end."""

from __future__ import annotations

import click

from hwnas.cli.common import print_json
from hwnas.cli.latency_cmds import table_group


@table_group.command("check")
@click.option("--device", required=True, help="Device name or alias with a runner (host, or a phone over adb).")
@click.option("--space", default=None, help="Space of the table to check (default: the device's only measured one).")
@click.option("--resolution", type=int, default=None, help="Resolution of the table (default: its only one).")
@click.option("--table", "table_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Check this table file instead of looking one up.")
@click.option("--members", type=click.IntRange(2, None), default=20, show_default=True,
              help="Random members of the space measured end to end.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the member draw.")
@click.option("--repeats", type=click.IntRange(1, None), default=None, help="Timed runs per member (default: the device's).")
@click.option("--no-save", is_flag=True, help="Do not store the result in the table's metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def table_check(device, space, resolution, table_path, members, seed, repeats, no_save, as_json) -> None:
    """Measure N random members of a measured table's space end to end on DEVICE and print share within
    ±10 %, RMSPE, Spearman and Kendall τ of the table's predictions (calibration included).

    The result is stored in the table's metadata (``meta.fidelity``); ``hwnas devices`` and
    ``hwnas predict`` show it, and predictions warn when the share or τ is below the thresholds
    (90 % / 0.8). Estimated devices (cost models) have nothing to measure here.
    """
    from hwnas.errors import TableError
    from hwnas.latency.devices import get_device
    from hwnas.latency.table import LatencyTable, find_tables
    from hwnas.profile.check import FIDELITY_MIN_KENDALL_TAU, FIDELITY_MIN_WITHIN_10PCT, check_table, fidelity_warning

    dev = get_device(device)
    if table_path:
        table = LatencyTable.load(table_path, device=dev.name)
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
        report = check_table(dev, table, members=members, seed=seed, progress=lambda i, n: bar.update(1))
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
    click.echo(f"{dev.name} {table.meta.space}@{table.meta.resolutions[0]} ({table.path}), "
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
