"""``hwnas ofa train`` / ``hwnas ofa specialize`` (hwnas.search.ofa): resume, end to end on a tiny run,
clear errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from hwnas.cli import main
from hwnas.search.ofa import OFAConfig, train_ofa

TINY = dict(space="mobilenetv3", data="digits", resolution=16, resolutions=[12, 16], width=0.25, epochs=2,
            steps_per_epoch=2, batch_size=16, random_subnets=1, data_limit=400)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ofa") / "run"
    res = train_ofa(OFAConfig(**TINY, out=str(out)))
    return out, res


def test_train_writes_a_run_folder(tiny_run):
    out, res = tiny_run
    for name in ("config.yaml", "history.jsonl", "checkpoints/last.pt", "supernet.pt", "result.json"):
        assert (out / name).exists(), name
    assert [r["epoch"] for r in res["history"]] == [1, 2]
    assert res["resolutions"] == [12, 16] and "sandwich" in res["rule"]


def test_killed_run_resumes_to_the_same_weights(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "run"
    stopped = train_ofa(OFAConfig(**TINY, out=str(other)), stop_after_epochs=1)
    assert stopped["stopped_after_epoch"] == 1 and not (other / "supernet.pt").exists()
    lines = []
    train_ofa(OFAConfig(**TINY, out=str(other)), echo=lines.append)  # the same command again: resumes
    assert any("resuming" in line for line in lines)
    a = torch.load(out / "supernet.pt", weights_only=True)["state_dict"]
    b = torch.load(other / "supernet.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    hist = [json.loads(x) for x in (other / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist] == [1, 2]


def test_resume_with_other_settings_is_refused(tiny_run):
    out, _ = tiny_run
    r = CliRunner().invoke(main, ["ofa", "train", "--data", "digits", "--resolution", "16", "--width", "0.5",
                                  "--out", str(out)])
    assert r.exit_code == 2 and "other settings" in r.output and "width" in r.output


def test_specialize_end_to_end(tiny_run):
    out, _ = tiny_run
    r = CliRunner().invoke(main, ["ofa", "specialize", str(out), "--target", "pixel", "--latency-ms", "5",
                                  "--target", "pixel", "--latency-ms", "0.8", "--samples", "8", "--evaluations", "24",
                                  "--population", "8", "--bn-batches", "2", "--no-export"])
    assert r.exit_code == 0, r.output
    assert "Spearman" in r.output and "Pareto front" in r.output
    summary = json.loads((out / "specialize.json").read_text())
    assert summary["accuracy_predictor"]["held_out_subnets"] == 2
    from hwnas.arch import ArchSpec
    from hwnas.latency.predict import load_predictor
    from hwnas.nn import build_model

    pred = load_predictor("pixel")
    for res in summary["targets"]:
        assert res["predicted_latency_ms"] <= res["latency_budget_ms"]
        arch = ArchSpec.load(res["artifacts"]["arch"])
        assert pred.predict(arch).latency_ms == pytest.approx(res["predicted_latency_ms"])
        # model.pt is a plain net's state dict: what `hwnas export --weights` loads
        state = torch.load(res["artifacts"]["model_pt"], weights_only=True)
        model = build_model(arch)
        model.load_state_dict(state["state_dict"])
        assert state["data_mean"] and 0.0 <= res["test_accuracy"] <= 1.0
    lats = [res["predicted_latency_ms"] for res in summary["targets"]]
    assert lats[1] <= 0.8 < 5
    # the accuracy samples are kept and reused
    assert len((out / "ofa" / "accuracy_samples.jsonl").read_text().splitlines()) == 8


@pytest.mark.slow
def test_specialize_exports_a_tflite(tiny_run):
    pytest.importorskip("ai_edge_litert")
    out, _ = tiny_run
    r = CliRunner().invoke(main, ["ofa", "specialize", str(out), "--target", "pixel", "--latency-ms", "5",
                                  "--samples", "8", "--evaluations", "8", "--population", "4", "--bn-batches", "2",
                                  "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])["targets"][0]
    assert res["export_error"] is None and res["tflite_test_accuracy"] is not None
    assert abs(res["tflite_test_accuracy"] - res["test_accuracy"]) < 0.02


@pytest.mark.parametrize("args,message", [
    (["--target", "nosuchphone", "--latency-ms", "5"], "nosuchphone"),
    (["--target", "pixel", "--latency-ms", "0.001"], "below the smallest subnet"),
    (["--target", "pixel"], "--latency-ms"),
])
def test_specialize_errors(tiny_run, args, message):
    out, _ = tiny_run
    r = CliRunner().invoke(main, ["ofa", "specialize", str(out), *args, "--samples", "8"])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output


def test_specialize_refuses_a_bad_run_folder(tmp_path):
    for folder, message in ((tmp_path / "missing", "no such run folder"), (tmp_path, "no config.yaml")):
        r = CliRunner().invoke(main, ["ofa", "specialize", str(folder), "--target", "pixel", "--latency-ms", "5"])
        assert r.exit_code == 2 and message in r.output, r.output
    (tmp_path / "config.yaml").write_text("ofa: {space: mobilenetv3}\n")
    r = CliRunner().invoke(main, ["ofa", "specialize", str(tmp_path), "--target", "pixel", "--latency-ms", "5"])
    assert r.exit_code == 2 and "not finished" in r.output


def test_train_refuses_a_space_without_elastic_supernet(tmp_path):
    r = CliRunner().invoke(main, ["ofa", "train", "--space", "fbnet", "--data", "digits", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "once-for-all" in r.output


def test_subnet_latency_table_equals_the_predictor():
    import random

    from hwnas.latency.predict import load_predictor
    from hwnas.nn.elastic import ElasticSpace
    from hwnas.search.ofa import SubnetLatency
    from hwnas.spaces import resolve_space

    es = ElasticSpace(resolve_space("mobilenetv3", resolution=16, width=0.25, in_channels=1, classes=10), (12, 16))
    pred = load_predictor("pixel")
    lat = SubnetLatency(pred, es)
    rng = random.Random(0)
    members = [es.smallest(), es.largest()] + [es.sample(rng) for _ in range(10)]
    for c in members:
        assert lat(c) == pytest.approx(pred.predict(es.arch(c)).latency_ms, rel=1e-9)
    lo, hi = lat.bounds
    assert lo <= min(lat(c) for c in members) + 1e-9 and hi >= max(lat(c) for c in members) - 1e-9
    assert lo == pytest.approx(lat(es.smallest()))
