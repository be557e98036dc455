"""The command line under bad input (mxfp4lab.cli.main): one line on stderr, a non-zero exit, no traceback;
and reports that never delete an earlier run (mxfp4lab.report.run_report).

Tracebacks before: bad YAML, a missing / binary / directory -f file, --out pointing at a file or a
read-only directory, ``report nonexistent --out <new dir>``. Lost before: a second same-day run replaced
the first."""

import json

import pytest
from test_report import tiny_dir  # noqa: F401 - the tiny notebook fixture

from mxfp4lab import cli, report


def _files(t):
    (t / "bad.yaml").write_text("layout:\n  row: [1, 2\n")
    (t / "binary.yaml").write_bytes(bytes(range(256)))
    (t / "dir.yaml").mkdir()
    (t / "list.yaml").write_text("- 1\n- 2\n")
    (t / "file").write_text("x")
    (t / "bin.json").write_bytes(b"\x88\x00")


#: (argv with {t} = tmp_path, exit status, words of the one stderr line)
CLI = [
    ("report layout -f {t}/bad.yaml --out {t}/o", 1, ["parameter file", "bad.yaml", "not valid YAML", "line 3"]),
    ("report layout -f {t}/missing.yaml --out {t}/o", 1, ["missing.yaml does not exist"]),
    ("report layout -f {t}/binary.yaml --out {t}/o", 1, ["binary.yaml is not UTF-8 text"]),
    ("report layout -f {t}/dir.yaml --out {t}/o", 1, ["dir.yaml is a directory"]),
    ("report layout -f {t}/list.yaml --out {t}/o", 1, ["expected a mapping"]),
    ("report layout --out {t}/file", 1, ["--out", "is a file, not a directory"]),
    ("report layout --out {t}/file/sub", 1, ["cannot write reports under", "Not a directory"]),
    ("report nonexistent --out {t}/new", 1, ["no notebook for report 'nonexistent'", "available"]),
    ("report layout nonexistent --out {t}/new", 1, ["no notebook for report 'nonexistent'"]),
    ("report layout --timeout -3 --out {t}/o", 2, ["--timeout must be a positive"]),
    ("layout --model nope", 2, ["unknown model 'nope'", "valid names"]),
    ("layout --row -5", 2, ["row must be >= 0"]),
    ("layout --model gpt-oss-20b --row 99999", 2, ["--row 99999", "row in [0, 5760)"]),
    ("sass --shape nope", 2, ["unknown model 'nope'"]),
    ("sass --tile 1,2", 2, ["a tile is 8 integers"]),
    ("build --configs nope --info", 1, ["config label 'nope'"]),
    ("bench summary --results {t}/missing.json", 2, ["missing.json"]),
    ("bench summary --results {t}/bin.json", 2, ["bin.json", "not valid JSON"]),
]


@pytest.mark.parametrize("argv, status, words", CLI, ids=[c[0].split(" {t}")[0] for c in CLI])
def test_user_error_is_one_line(argv, status, words, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MXFP4LAB_TRACEBACK", raising=False)
    _files(tmp_path)
    assert cli.main(argv.format(t=tmp_path).split()) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"mxfp4lab {argv.split()[0]}: error: ")
    missing = [w for w in words if w not in err]
    assert not missing, f"{missing} not in: {err}"
    assert not (tmp_path / "new").exists()  # nothing written for a run that never started


def test_read_only_output_directory(tmp_path, capsys, monkeypatch):
    """An unwritable --out (simulated: the suite may run as root, who can write anywhere)."""
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(report.tempfile, "mkdtemp", refuse)
    assert cli.main(["report", "layout", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"mxfp4lab report: error: cannot write reports under {tmp_path}: Permission denied"


def test_argument_errors_exit_2_with_argparse_usage(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["distributed", "--m", "abc", "--spawn", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'abc' is not a comma-separated list of integers" in err


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Only user errors are turned into one line: anything else is re-raised."""
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_cmd_provenance", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["provenance"])


def test_traceback_on_request(monkeypatch):
    monkeypatch.setenv("MXFP4LAB_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["sass", "--shape", "nope"])


# --------------------------------------------------------------------------------------------
# Reports never delete an earlier run
# --------------------------------------------------------------------------------------------
def test_second_run_same_day_gets_its_own_directory(tiny_dir, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    run = lambda **p: report.run_report("tiny", p, out_dir=out, notebook_dir=tiny_dir,
                                        date="2030-01-02", progress=False)
    first = run(value=1)
    kept = {p.name: p.read_bytes() for p in first.iterdir()}
    second = run(value=2)
    assert (first.name, second.name) == ("2030-01-02-01_tiny", "2030-01-02-01_tiny-2")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == kept  # the parameter sweep keeps run 1
    assert json.loads((second / "results.json").read_text())["value"] == 2
    for _ in range(2):
        with pytest.raises(report.ReportError):
            run(fail=True)
    third = run(value=3)
    assert third.name == "2030-01-02-01_tiny-3"
    failed = sorted(p.name for p in out.glob(".failed-*"))
    assert failed == [".failed-2030-01-02-01_tiny", ".failed-2030-01-02-01_tiny-2"]  # both failures kept
    index = (out / "index.html").read_text()
    for d in ("2030-01-02-01_tiny/", "2030-01-02-01_tiny-2/", "2030-01-02-01_tiny-3/"):
        assert d in index
    assert not list(out.glob(".tmp-*"))
