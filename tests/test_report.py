"""mxfp4lab.report / cli: pairing check, results recording, parameters, failure handling, index, CLI."""

import json
import math

import jupytext
import nbformat
import pytest

from mxfp4lab import cli, report

TINY = """# %% tags=["parameters"]
fail = False
value = 1
results_path = None

# %%
from mxfp4lab import report
report.record("value", value)
report.record("nan", float("nan"))
assert not fail, "asked to fail"

# %%
import matplotlib.pyplot as plt
plt.plot([0, 1], [value, 2])
plt.show()

# %%
report.save_results(results_path)
"""


@pytest.fixture
def tiny_dir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    nb = jupytext.reads(TINY, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(d / "01_tiny.ipynb"))
    return d


def test_notebook_pairs_in_sync():
    assert report.check_pairs() == []


def test_check_pairs_detects_drift(tiny_dir):
    assert any("no paired" in p for p in report.check_pairs(tiny_dir))
    (tiny_dir / "01_tiny.py").write_text(TINY.replace("value = 1", "value = 2"))
    probs = report.check_pairs(tiny_dir)
    assert probs == ["01_tiny.ipynb vs 01_tiny.py: cell 0 differs in source"]
    (tiny_dir / "01_tiny.py").write_text(TINY)
    assert report.check_pairs(tiny_dir) == []
    nb = nbformat.read(str(tiny_dir / "01_tiny.ipynb"), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="x")]
    nbformat.write(nb, str(tiny_dir / "01_tiny.ipynb"))
    assert any("stored outputs" in p for p in report.check_pairs(tiny_dir))


def test_record_and_save_results(tmp_path):
    import numpy as np
    import torch

    report.clear_results()
    report.record("a", np.float32(1.5))
    report.record("b", torch.tensor([1, 2]))
    report.record("c", {"x": math.inf, "y": (1, 2)})
    assert report.save_results(None)["a"] == 1.5  # None: nothing written
    out = report.save_results(tmp_path / "r" / "results.json", d="z")
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data == out == {"a": 1.5, "b": [1, 2], "c": {"x": None, "y": [1, 2]}, "d": "z"}
    report.clear_results()


def test_parameters_merge_and_validation(tmp_path):
    assert report.parse_value("3") == 3 and report.parse_value("[1, 2]") == [1, 2]
    assert report.parse_value("gpt-oss-20b") == "gpt-oss-20b" and report.parse_value("true") is True
    f = tmp_path / "p.yaml"
    f.write_text("row: 5\nseed: 1\nlayout:\n  k: 7\naccuracy:\n  k: 99\n")
    fp = report.load_param_file(f)
    got = report.params_for("layout", ["row", "k", "expert"], fp, {"expert": 2}, strict=True)
    assert got == {"row": 5, "k": 7, "expert": 2}
    with pytest.raises(report.ReportError, match="unknown parameter"):
        report.params_for("layout", ["row"], {}, {"rwo": 1}, strict=True)
    assert report.params_for("layout", ["row"], {}, {"other": 1}, strict=False) == {}


def test_run_report_success_then_failure_keeps_earlier(tiny_dir, tmp_path):
    out = tmp_path / "out"
    path = report.run_report("tiny", {"value": 3}, out_dir=out, notebook_dir=tiny_dir, date="2030-01-02",
                             progress=False)
    assert path == out / "2030-01-02-01_tiny"
    files = sorted(p.name for p in path.iterdir())
    assert files == ["01_tiny.html", "01_tiny.ipynb", "results.json", "run.json"]
    assert json.loads((path / "results.json").read_text()) == {"value": 3, "nan": None}
    html = (path / "01_tiny.html").read_text()
    assert "data:image/png;base64," in html and 'src="https://' not in html
    run = json.loads((path / "run.json").read_text())
    assert run["status"] == "ok" and run["parameters"] == {"value": 3}
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    with pytest.raises(report.ReportError, match="asked to fail") as ei:
        report.run_report("tiny", {"fail": True}, out_dir=out, notebook_dir=tiny_dir, date="2030-01-02",
                          progress=False)
    assert "earlier reports untouched" in str(ei.value)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # earlier report intact
    failed = out / ".failed-2030-01-02-01_tiny"
    assert (failed / "01_tiny.ipynb").exists()
    assert json.loads((failed / "run.json").read_text())["status"] == "failed"
    assert not list(out.glob(".tmp-*"))
    index = (out / "index.html").read_text()
    assert "2030-01-02-01_tiny/01_tiny.html" in index and ".failed-2030-01-02-01_tiny" in index


def test_cli_report_exit_codes(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["report", "tiny", "--notebooks", str(tiny_dir), "--out", str(out), "--no-progress"]
    assert cli.main(args + ["-p", "value", "4"]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert json.loads((run_dir / "results.json").read_text())["value"] == 4
    assert cli.main(args + ["-p", "fail", "true"]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert json.loads((run_dir / "results.json").read_text())["value"] == 4
    assert cli.main(args + ["-p", "typo", "1"]) == 1  # unknown parameter for a single report
    assert cli.main(["report", "no_such_report", "--out", str(out)]) == 1
    assert cli.main(["report", "--list"]) == 0
    assert "layout" in capsys.readouterr().out


def test_cli_layout_example(capsys):
    assert cli.main(["layout", "--example"]) == 0
    text = capsys.readouterr().out
    for needle in ("16-row x 64-element tile", "bit permutation", "Scale fold", "0 mismatches",
                   " 0->6 ", "16.0"):
        assert needle in text
    assert cli.main(["layout", "--example", "--model", "gpt-oss-20b", "--row", "16"]) == 0
    assert "gate_8 -> fc1 row 2952" in capsys.readouterr().out


def test_cli_build_is_wired_or_explains(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "build" in sub.choices


def test_export_is_offline_widgets_static_and_findings_input_hidden(tmp_path):
    view = "application/vnd.jupyter.widget-view+json"
    nb = nbformat.v4.new_notebook()
    fcell = nbformat.v4.new_code_cell("summary = findings.placeholder()  # SECRET-SOURCE")
    fcell.metadata["tags"] = [report.REMOVE_INPUT_TAG]
    fcell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": "<b>FINDINGS-BOX</b>",
                                                                  "text/plain": "f"})]
    wcell = nbformat.v4.new_code_cell("explorer")
    wcell.outputs = [nbformat.v4.new_output("execute_result", execution_count=1, data={
        view: {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/html": "<div>STATIC-SNAPSHOT</div>", "text/plain": "LayoutExplorer"})]
    nb.cells = [fcell, wcell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    p = tmp_path / "w.ipynb"
    nbformat.write(nb, str(p))
    html = report.export_html(p, tmp_path / "w.html").read_text()
    assert "STATIC-SNAPSHOT" in html and "FINDINGS-BOX" in html
    assert "SECRET-SOURCE" not in html  # the findings cell shows its output only
    assert view not in html and "widget-state" not in html
    assert 'src="https://' not in html and "src='https://" not in html
    assert nbformat.read(str(p), as_version=4).cells[1].outputs[0].data.get(view)  # the .ipynb keeps the widget


def test_executed_notebook_names_no_temporary_directory(tiny_dir, tmp_path):
    out = tmp_path / "out"
    path = report.run_report("tiny", {}, out_dir=out, notebook_dir=tiny_dir, date="2030-01-03", progress=False)
    text = (path / "01_tiny.ipynb").read_text() + (path / "01_tiny.html").read_text()
    assert ".tmp-" not in text and str(path / "results.json") in text
