"""How repeatable are the host's measurements right now? Re-measure some of a predictor_fidelity run.

Re-measures the first ``--members`` networks end to end and the first ``--ops`` op keys of a
``benchmarks/predictor_fidelity.py`` run (its JSON report names the table and members file) with the
same runner, warm-up and repeats, and prints one JSON object: the change of each in % of the first
measurement, the median and max |change|, and ``uptime`` before and after. A fidelity goal of ±10 %
means little when the same network moves by more than a few % between two measurements.

For the networks it also gives the share re-measured within ±10 % of the first measurement and the
Spearman ρ / Kendall τ between the two measurements: the best any predictor can score against one
measurement of those networks on this machine at this load (a ceiling for predictor_fidelity's figures).
Networks are timed from the ``.tflite`` files the run kept (``<table>.members/``), converted again
only where missing.

Usage::

    python benchmarks/remeasure_repeatability.py /tmp/fid-runs/mobilenetv2.json --members 100 --ops 25
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="a predictor_fidelity.py JSON output")
    ap.add_argument("--members", type=int, default=6)
    ap.add_argument("--ops", type=int, default=25)
    args = ap.parse_args(argv)

    from hwnas.arch import ArchSpec
    from hwnas.latency.devices import get_device
    from hwnas.latency.table import LatencyTable
    from hwnas.opkey import OpKey
    from hwnas.profile.run import make_builder, make_runner, measure_key

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from predictor_fidelity import build_members
    from scipy.stats import kendalltau, spearmanr

    rep = json.loads(Path(args.report).read_text())
    dev = get_device(rep["device"]).model_copy(update={"repeats": rep["repeats"], "warmup": rep["warmup"]})
    builder, runner = make_builder(dev), make_runner(dev)
    rows = [json.loads(line) for line in Path(rep["members_file"]).read_text().splitlines() if line.strip()]
    table = LatencyTable.load(rep["table"])
    keys = [k for k in sorted(table.entries) if OpKey.parse(k).kind != "skip"][: args.ops]
    rows = rows[: args.members]
    table_path = Path(rep["table"])
    arts = build_members(dev.name, [ArchSpec.from_compact(r["arch"]) for r in rows],
                         table_path.with_name(table_path.stem + ".members"), 1)
    start = _uptime()
    try:
        second = [runner.measure(a).median_ms for a in arts]
        e2e = [100 * (m / r["measured_ms"] - 1) for m, r in zip(second, rows)]
        ops = [100 * (measure_key(OpKey.parse(k), builder, runner, dev).median_ms / table.entries[k].median_ms - 1)
               for k in keys]
    finally:
        runner.close()

    def summary(xs):
        return {"change_pct": [round(x, 2) for x in xs], "median_abs_pct": round(statistics.median(map(abs, xs)), 2),
                "max_abs_pct": round(max(map(abs, xs)), 2)} if xs else None

    first = [r["measured_ms"] for r in rows]
    agree = ({"members": len(rows), "within_10pct": round(sum(abs(x) <= 10 for x in e2e) / len(e2e), 4),
              "spearman": round(float(spearmanr(first, second)[0]), 4),
              "kendall_tau": round(float(kendalltau(first, second)[0]), 4)} if len(rows) > 2 else None)
    out = {"report": args.report, "end_to_end": summary(e2e), "first_vs_second": agree, "ops": summary(ops),
           "uptime": {"start": start, "end": _uptime()}}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
