"""Fidelity of the estimated phones' cost models on the public per-op data: new model vs old one.

For ``pixel1`` (default) the new model is ``mobile-cpu-v2`` fitted by
:func:`hwnas.latency.costmodel.fit_report` on the sources its device file names; the old one is
``mobile-cpu-v1`` refitted here exactly as it was shipped (minimax on the 22 MobileNetV2 rows only).
For each source the JSON gives share within ±10 %, MAPE, median error, Spearman ρ:

* ``per_source``: in-sample (new: with each source's fitted factor; old: factor 1, and the one
  rescaled factor the source's median ratio would give),
* ``leave_one_source_out``: the new model refitted without the source (factor 1 = the anchor's
  setup, and rescaled); the old model never saw any per-op source, so its per-source figures are
  already held out, and for the 22 rows it is in-sample (said so),
* ``held_out``: sources evaluated, never fitted (``proxylessnas-mobile``: its per-op shape disagrees
  with ``pixel_trim``'s, Spearman 0.90 between the two files, so it is not read as a Pixel-1 setup).

For the nn-Meter phones (``--device pixel4|pixel6|xiaomi11``) the only source is the phone's
nn-Meter LUT, and the leave-out unit is the input spatial size (``leave_one_spatial_out``).

No published end-to-end figure other than the 22 MobileNetV2 Pixel-1 rows is read.

Usage::

    python benchmarks/pixel1_fidelity.py [--data ../shared/data] [--device pixel1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the public data folder")
    ap.add_argument("--device", default="pixel1", help="an estimated device with a mobile-cpu-v2 cost model")
    args = ap.parse_args(argv)

    from hwnas.latency.costmodel import CostModel, fit, fit_report, source_errors, _rescale
    from hwnas.latency.devices import get_device
    from hwnas.latency.sources import ANCHOR, load_sources, mobilenetv2_rows

    t0 = time.perf_counter()
    spec = get_device(args.device).cost_model
    sources = load_sources(args.data, spec.sources)
    held = load_sources(args.data, spec.held_out) if spec.held_out else {}
    anchor = spec.anchor or spec.sources[0]
    params, factors, report = fit_report(sources, anchor, held_out=held,
                                         leave_out="source" if len(sources) > 1 else "spatial")
    out = {"device": args.device, "new": {"model": "mobile-cpu-v2", "params": params, "factors": factors, **report}}
    if args.device == "pixel1":
        old_params, old_report = fit(mobilenetv2_rows(Path(args.data) / "published-latency" / "published_latencies.csv"))
        old = CostModel(old_params, "mobile-cpu-v1")
        per = {}
        for name, rows in {**sources, **held}.items():
            f = _rescale(old, rows)
            per[name] = {"factor_1": source_errors(old, rows), "rescaled": source_errors(old, rows, f),
                         "factor": round(f, 4),
                         "held_out": name != ANCHOR}
        out["old"] = {"model": "mobile-cpu-v1", "params": old_params, "fitted_on": f"{ANCHOR} (22 rows) only",
                      "per_source": per}
        out["side_by_side"] = {
            name: {"new_loso_factor_1": report["leave_one_source_out"].get(name, {}).get("factor_1")
                   or report["held_out"].get(name, {}).get("factor_1"),
                   "new_loso_rescaled": report["leave_one_source_out"].get(name, {}).get("rescaled")
                   or report["held_out"].get(name, {}).get("rescaled"),
                   "new_in_sample": report["per_source"].get(name),
                   "old_factor_1": per[name]["factor_1"], "old_rescaled": per[name]["rescaled"]}
            for name in per}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
