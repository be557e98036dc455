"""CPU-side logic of scripts/gpu/check_peers.py: the verdict, the table, using a staged folder, no-GPU exit."""

import os
import sys

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def cp():
    return load_script("scripts/gpu/check_peers.py")


def test_verdict_needs_every_element_written_the_fp32_match_and_a_faithful_replay(cp):
    good = {"nan": 0, "rel_err_fp32": 3.3e-3, "graph_vs_eager": 0.0}
    assert cp.verdict(good) == (True, "")
    assert not cp.verdict({**good, "nan": 5})[0] and "5 unwritten" in cp.verdict({**good, "nan": 5})[1]
    assert "rel err vs fp32" in cp.verdict({**good, "rel_err_fp32": 0.4})[1]
    assert "graph replay differs" in cp.verdict({**good, "graph_vs_eager": 1.0})[1]
    assert cp.verdict({**good, "rel_err_fp32": float("nan")})[0] is False  # NaN never passes
    assert cp.verdict({"error": "construct: boom"}) == (False, "construct: boom")
    assert cp.verdict({"rel_err_fp32": 1e-3})[0] is False  # a row that never counted NaNs does not pass


def test_table_shows_one_line_per_row_with_its_verdict(cp):
    rows = [{"backend": "triton_kernels", "shape": "gpt-oss-120b", "m": 64, "nan": 0, "rel_err_fp32": 3.2e-3,
             "deterministic": True, "graph_vs_eager": 0.0, "median_us": 509.0},
            {"backend": "humming", "shape": "dsv4-flash", "error": "construct: no nvcc"}]
    lines = cp.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[2].rstrip().endswith("ok") and "509.0" in lines[2]
    assert "FAIL: construct: no nvcc" in lines[3]


def test_a_staged_folder_sets_the_triton_kernels_path_and_installs_the_humming_wheel(cp, tmp_path, monkeypatch):
    (tmp_path / "stage" / "triton_kernels" / "triton_kernels").mkdir(parents=True)
    (tmp_path / "stage" / "humming").mkdir()
    (tmp_path / "stage" / "humming" / "humming_kernels-0.1.19-cp310-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"")
    site = tmp_path / "site"
    calls = []

    class R:
        returncode, stderr = 0, ""

    def fake_run(cmd, **kw):
        calls.append(cmd)
        site.mkdir()
        return R()

    monkeypatch.setattr(cp.subprocess, "run", fake_run)
    monkeypatch.setattr(cp.importlib.util, "find_spec", lambda name: None)  # humming not importable yet
    monkeypatch.delenv("MXFP4LAB_TRITON_KERNELS", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    notes = cp.use_stage(tmp_path / "stage", site)
    assert os.environ["MXFP4LAB_TRITON_KERNELS"] == str((tmp_path / "stage" / "triton_kernels").resolve())
    assert len(calls) == 1 and calls[0][-1].endswith(".whl") and "--no-index" in calls[0] and "--no-deps" in calls[0]
    assert calls[0][calls[0].index("--target") + 1] == str(site) and sys.path[0] == str(site)
    assert len(notes) == 2


def test_without_a_gpu_it_says_so_and_exits_2(cp, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks the CPU-only exit")
    assert cp.main(["--backends", "triton_kernels", "--shapes", "gpt-oss-20b", "--m", "1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
