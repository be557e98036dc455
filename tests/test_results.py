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


def test_merge_run_replaces_keyed_rows_archives_them_with_their_runs_and_records_the_new_run(tmp_path):
    (tmp_path / "index.json").write_text("{}")
    target = results.result_path("latency", "h200", root=tmp_path)
    main = {**results.provenance("main"), "mxfp4lab_commit": "aaa"}
    old_run = {"provenance": {**main, "mxfp4lab_commit": "bbb"}, "ceilings": {"copy_bytes_per_s": 1.0}}

    def row(b, m, us, **kw):
        return {"backend": b, "shape": "s", "m": m, "routing": "uniform", "median_us": us, **kw}

    results.write(target, "latency_sweep", [row("peer", 1, 50.0), row("k", 1, 30.0), row("k", 64, 200.0, run="old"),
                                            row("peer", 64, 190.0)],
                  prov=main, runs={"main": {"provenance": main}, "old": old_run}, note="the sweep")
    job = tmp_path / "job" / "latency.json"
    job.parent.mkdir()
    results.write(job, "latency_sweep", [row("k", 64, 180.0), row("k", 256, 300.0)],
                  prov={**main, "mxfp4lab_commit": "ccc", "command": "bench moe"}, ceilings={"copy_bytes_per_s": 2.0})
    _, arch = results.merge_run(target, job, "new_kernel", key=("backend", "shape", "m", "routing"),
                                  label="before-new-kernel", what="the rows the new kernel's run replaced")
    r = results.load(target)
    # the replaced row's place holds the new one; the new point is appended; the rest untouched
    assert [(x["backend"], x["m"], x["median_us"], x.get("run")) for x in r.rows] == [
        ("peer", 1, 50.0, None), ("k", 1, 30.0, None), ("k", 64, 180.0, "new_kernel"), ("peer", 64, 190.0, None),
        ("k", 256, 300.0, "new_kernel")]
    assert r.provenance["mxfp4lab_commit"] == "aaa" and r.meta["note"] == "the sweep"
    # the new run is recorded with its own provenance and ceilings; "old" has no row left and moves out
    assert set(r.meta["runs"]) == {"main", "new_kernel"}
    assert r.meta["runs"]["new_kernel"] == {"provenance": results.load(job).provenance,
                                            "ceilings": {"copy_bytes_per_s": 2.0}}
    a = results.load(arch)
    assert arch == tmp_path / "archive" / "latency" / "h200-before-new-kernel.json"
    assert a.rows == [row("k", 64, 200.0, run="old")] and a.meta["runs"] == {"old": old_run}
    assert a.provenance["mxfp4lab_commit"] == "aaa"
    index = results.read_index(tmp_path)
    assert index["archive/latency/h200-before-new-kernel.json"]["what"] == "the rows the new kernel's run replaced"
    assert index["latency/h200.json"]["kind"] == "latency_sweep"


@pytest.mark.parametrize("case, match", [
    ("name_reused", "must be new"), ("main", "must be new"), ("no_key_field", "has no"), ("kind", "kinds differ"),
    ("label_reused", "never reused"), ("dup_keys", "several rows with one key")])
def test_merge_run_refuses_bad_input_and_writes_nothing(tmp_path, case, match):
    (tmp_path / "index.json").write_text("{}")
    target = results.result_path("latency", "h200", root=tmp_path)
    rows = [{"backend": "k", "m": 1, "median_us": 30.0}]
    results.write(target, "latency_sweep", rows, command="t", runs={"main": {}, "taken": {}})
    job = tmp_path / "job.json"
    new = [{"backend": "k", "m": 1, "median_us": 20.0}]
    if case == "no_key_field":
        new = [{"backend": "k", "median_us": 20.0}]
    if case == "dup_keys":
        new = new * 2
    results.write(job, "moe_launches" if case == "kind" else "latency_sweep", new, command="t")
    if case == "label_reused":
        (tmp_path / "archive" / "latency").mkdir(parents=True)
        (tmp_path / "archive" / "latency" / "h200-lbl.json").write_text("{}")
    name = {"name_reused": "taken", "main": "main"}.get(case, "fresh")
    before = target.read_text()
    with pytest.raises(results.ResultsError, match=match):
        results.merge_run(target, job, name, key=("backend", "m"), label="lbl")
    assert target.read_text() == before
    assert not (tmp_path / "archive" / "latency" / "h200-lbl.json").exists() or case == "label_reused"


def test_the_merge_command_records_a_run_and_names_what_it_replaced(tmp_path, capsys):
    from mxfp4lab import cli

    (tmp_path / "index.json").write_text("{}")
    target = results.result_path("latency", "h200", root=tmp_path)
    results.write(target, "latency_sweep", [{"backend": "k", "m": 1, "median_us": 30.0}], command="t")
    job = tmp_path / "job.json"
    results.write(job, "latency_sweep", [{"backend": "k", "m": 1, "median_us": 20.0}], command="t")
    assert cli.main(["results", "merge", str(job), "--into", str(target), "--name", "faster", "--key", "backend,m",
                     "--label", "before-faster", "--what", "the row the faster run replaced"]) == 0
    out = capsys.readouterr().out
    assert "1 rows of run faster" in out and "h200-before-faster.json" in out
    assert results.load(target).rows == [{"backend": "k", "m": 1, "median_us": 20.0, "run": "faster"}]
    # a second merge under the same name is refused in one line, exit status 2 (bad input)
    assert cli.main(["results", "merge", str(job), "--into", str(target), "--name", "faster", "--key", "backend,m",
                     "--label", "again"]) == 2
    assert "must be new" in capsys.readouterr().err
