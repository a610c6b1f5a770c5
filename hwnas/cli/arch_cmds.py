"""``hwnas spaces``, ``hwnas zoo`` and ``hwnas show``."""

from __future__ import annotations

import click

from hwnas.cli import main
from hwnas.cli.common import arch_argument, fmt_millions, print_json, print_table


@main.command("spaces")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def spaces_cmd(as_json: bool) -> None:
    """List the search spaces with their size, decisions and op-key count."""
    from hwnas.spaces import resolve_space, space_names

    rows = []
    for name in space_names():
        space = resolve_space(name)
        rows.append({"name": name, "resolution": space.resolution, "decisions": len(space.decisions),
                     "size": space.size, "op_keys": len(space.op_keys())})
    if as_json:
        print_json(rows)
        return
    print_table("search spaces", ["name", "resolution", "decisions", "size", "op keys"],
                [[r["name"], r["resolution"], r["decisions"], f"{r['size']:.3e}", r["op_keys"]] for r in rows],
                right=["resolution", "decisions", "size", "op keys"])


@main.command("zoo")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def zoo_cmd(as_json: bool) -> None:
    """List the reference architectures with published and computed params/MACs (at 224 unless `res` says)."""
    from hwnas.nn.count import count
    from hwnas.zoo import ZOO

    rows = []
    for name, entry in ZOO.items():
        cost = count(entry.arch)
        rows.append({"name": name, "resolution": entry.arch.resolution, "params": cost.params, "macs": cost.macs, "published_params": entry.params,
                     "published_macs": entry.macs, "space": entry.space, "source": entry.source})
    if as_json:
        print_json(rows)
        return
    print_table("model zoo", ["name", "res", "params", "MACs", "paper params", "paper MACs", "space"],
                [[r["name"], r["resolution"], fmt_millions(r["params"]), fmt_millions(r["macs"]), fmt_millions(r["published_params"]),
                  fmt_millions(r["published_macs"]), r["space"] or "-"] for r in rows],
                right=["res", "params", "MACs", "paper params", "paper MACs"])


@main.command("show")
@arch_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: params, macs, blocks, arch.")
def show_cmd(arch: str, width: float | None, resolution: int | None, as_json: bool) -> None:
    """Show an architecture layer by layer: NHWC shapes, params and MACs.

    ARCH is a YAML file, a compact string (e.g. "res224 stem=cn_k3_s2_c32_r6 ir_k3_e6_s1_c16_r6
    head=cn_k1_s1_c1280_r6") or a zoo name (mobilenetv2, mnasnet-a1, efficientnet-b0, ...).
    """
    from hwnas.nn.count import count
    from hwnas.zoo import load_arch

    spec = load_arch(arch, width=width, resolution=resolution)
    cost = count(spec)
    blocks = [{"name": r.name, "op": r.op, "in_shape": list(r.in_shape), "out_shape": list(r.out_shape),
               "params": r.params, "macs": r.macs} for r in cost.layers]
    if as_json:
        print_json({"name": spec.name, "resolution": spec.resolution, "width_multiplier": spec.width_multiplier,
                    "params": cost.params, "macs": cost.macs, "blocks": blocks, "arch": spec.to_compact()})
        return
    print_table(f"{spec.name or 'architecture'} @ {spec.resolution}px, width {spec.width_multiplier:g}",
                ["layer", "op", "input (HxWxC)", "output", "params", "MACs"],
                [[b["name"], b["op"], "x".join(map(str, b["in_shape"])), "x".join(map(str, b["out_shape"])),
                  f"{b['params']:,}", f"{b['macs']:,}"] for b in blocks],
                right=["params", "MACs"])
    click.echo(f"total: {cost.params:,} params ({fmt_millions(cost.params)}), {cost.macs:,} MACs "
               f"({fmt_millions(cost.macs)})")
