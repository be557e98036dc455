"""mxfp4lab.results: one schema, one naming rule, an index that matches the files, atomic writes."""

import json
import os

import pytest

from mxfp4lab import results


def test_every_recorded_file_follows_the_schema_and_the_naming_rule():
    files = results.files()
    assert files, "data/results holds no result file"
    for p in files:
        r = results.load(p)  # validates kind / schema / provenance / rows
        rel = p.relative_to(results.RESULTS_DIR).parts
        if rel[0] == results.ARCHIVE_DIR:
            assert len(rel) == 3, f"{p}: archive/<study>/<gpu>-<label>.json"
        else:
            assert len(rel) == 2 and p == results.result_path(rel[0], p.stem), f"{p}: <study>/<gpu>.json"
        assert r.provenance.get("date"), f"{p}: provenance without a date"
        text = p.read_text()
        for word in ("superseded_", "baseline_session", "repeat_session"):
            assert word not in text, f"{p}: lab-diary key {word}"


def test_index_says_what_each_file_is():
    index = results.read_index()
    on_disk = {p.relative_to(results.RESULTS_DIR).as_posix() for p in results.files()}
    assert set(index) == on_disk
    for rel, entry in index.items():
        assert entry["kind"] == results.load(results.RESULTS_DIR / rel).kind, rel
        assert len(entry["what"]) > 20, rel


def test_write_load_partial_archive_and_index(tmp_path):
    (tmp_path / "index.json").write_text("{}")
    target = results.result_path("latency", "h100", root=tmp_path)
    rows = [{"shape": "s", "m": 1, "median_us": 10.0}]
    part = results.write(target, "latency_sweep", rows, partial=True, complete=False, command="test")
    assert part.name == "h100.partial.json" and not target.exists()
    assert results.read_index(tmp_path) == {}  # a run in progress is not indexed
    results.write(target, "latency_sweep", rows * 2, complete=True, command="test", note="n")
    assert not part.exists()
    r = results.load("latency", "h100", root=tmp_path)
    assert (r.kind, len(r.rows), r.meta["note"], r.provenance["command"]) == ("latency_sweep", 2, "n", "test")
    assert results.read_index(tmp_path)["latency/h100.json"]["kind"] == "latency_sweep"
    assert results.find("latency", root=tmp_path) == target
    moved = results.archive(target, "first-run", what="superseded by a rerun")
    assert moved == tmp_path / "archive" / "latency" / "h100-first-run.json" and not target.exists()
    index = results.read_index(tmp_path)
    assert list(index) == ["archive/latency/h100-first-run.json"]
    assert index["archive/latency/h100-first-run.json"]["what"] == "superseded by a rerun"
    with pytest.raises(results.ResultsError, match="never reused"):
        results.write(target, "latency_sweep", rows, command="t")
        results.archive(target, "first-run")


def test_a_failed_write_leaves_the_earlier_result(tmp_path):
    target = tmp_path / "x" / "cpu.json"
    results.write(target, "layout_throughput", [{"op": "a"}], command="t")
    before = target.read_text()
    with pytest.raises(TypeError):
        results.write(target, "layout_throughput", [{"op": object.__new__(BadJson)}], command="t")
    assert target.read_text() == before
    assert [p.name for p in target.parent.iterdir()] == ["cpu.json"]  # no temporary file left


class BadJson:
    def __str__(self):
        raise TypeError("not serializable")


@pytest.mark.parametrize("doc,match", [
    ([], "one JSON object"),
    ({"kind": "latency_sweep", "schema": 1, "rows": []}, r"missing top-level key\(s\) \['provenance'\]"),
    ({"kind": "nope", "schema": 1, "provenance": {}, "rows": []}, "kind 'nope' is not one of"),
    ({"kind": "latency_sweep", "schema": 0, "provenance": {}, "rows": []}, "schema 0"),
    ({"kind": "latency_sweep", "schema": 1, "provenance": {}, "rows": [1]}, "rows .* are not objects"),
])
def test_validate_names_the_rule(doc, match):
    with pytest.raises(results.ResultsError, match=match):
        results.validate(doc, "f.json")


def test_naming_rule_and_gpu_slug(tmp_path):
    assert results.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert results.gpu_slug("NVIDIA H200") == "h200" and results.gpu_slug(None) == "cpu"
    with pytest.raises(results.ResultsError, match="naming rule"):
        results.result_path("Latency H100", "h100")
    with pytest.raises(results.ResultsError, match="schema fields"):
        results.write(tmp_path / "a" / "cpu.json", "prepare_cost", [], schema=2, command="t")
    p = tmp_path / "bad" / "cpu.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"kind": "prepare_cost"}))
    with pytest.raises(results.ResultsError, match=str(p)):
        results.load(p)
    assert not os.path.exists(tmp_path / "index.json")  # trees without an index are not given one
