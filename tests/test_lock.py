"""The locked set of versions (requirements/) is consistent with pyproject.toml, the GPU host's pins, the
install commands that read it, and the vLLM record; scripts/lock.py's checks catch drift.

Whether the running environment *is* the locked set is checked by `make setup`/`make test` themselves
(``scripts/lock.py check`` after installing), not here: the suite also runs on the GPU host, whose torch
is another release by design."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mxfp4lab_lock", ROOT / "scripts/lock.py")
lock = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lock  # dataclasses look their module up
_spec.loader.exec_module(lock)
Req = lock.Requirement


def test_lock_is_sorted_exact_pins_without_torch():
    pins = lock.lock_pins()
    lines = [ln for ln in lock.LOCK.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == len(pins) > 100
    assert lines == [f"{n}=={v}" for n, v in sorted(pins.items())]
    assert "torch" not in pins
    # the header names what is held, as `make lock` wrote it
    header = lock.LOCK.read_text().split("\n" + lines[0])[0]
    for spec in lock.held()[1:]:
        assert spec.replace("==", " ") in header, spec


def test_pyproject_ranges_admit_every_locked_version():
    pins = lock.lock_pins()
    for req in lock.project_requirements(("dev",)):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = lock.norm(req.name)
        versions = [lock.machine_pins(m)["torch"] for m in ("cpu", "gpu")] if name == "torch" else [pins[name]]
        for v in versions:
            assert req.specifier.contains(v, prereleases=True), f"{name}=={v} is outside pyproject's {req}"


def test_machine_files_agree_with_the_lock():
    pins = lock.lock_pins()
    cpu, gpu = lock.machine_pins("cpu"), lock.machine_pins("gpu")
    assert set(cpu) == {"torch"}
    assert {"torch", "triton", "flashinfer-python", "apache-tvm-ffi"} <= set(gpu)
    for name, version in gpu.items():
        if name != "torch":
            assert pins[name] == version, f"gpu.txt pins {name}=={version}, the lock {pins[name]}"
    assert lock.held() == [f"torch=={cpu['torch']}"] + [f"{n}=={v}" for n, v in gpu.items() if n != "torch"]


def test_read_pins_rejects_ranges_duplicates_and_missing_files(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("-c lock.txt\n# comment\nfoo==1.0  # why\n")
    assert lock.read_pins(f) == {"foo": "1.0"}
    for text, rule in [("foo>=1.0\n", "not an exact pin"), ("Foo==1\nfoo==2\n", "pinned twice"),
                       ("foo\n", "not an exact pin")]:
        f.write_text(text)
        with pytest.raises(lock.LockError, match=rule) as e:
            lock.read_pins(f)
        assert "x.txt" in str(e.value)
    with pytest.raises(lock.LockError, match="does not exist"):
        lock.read_pins(tmp_path / "none.txt")


def _env(versions, requires=None):
    return lock.Installed(versions, requires or {})


def test_closure_follows_extras_and_markers():
    env = _env({"a": "1.0", "b": "2.0", "c": "1.5", "d": "0.1", "e": "9"},
               {"a": ["c<2", "b; extra == 'x'", "d; python_version < '3.0'"], "b": ["e"]})
    found, problems = lock.closure([Req("a")], env)
    assert (found, problems) == ({"a": "1.0", "c": "1.5"}, [])
    found, problems = lock.closure([Req("a[x]>=1"), Req("zzz; python_version < '3.0'")], env)
    assert set(found) == {"a", "b", "c", "e"} and problems == []
    _, problems = lock.closure([Req("a>=2"), Req("missing")], env)
    assert problems == ["a 1.0 does not satisfy a>=2", "missing (missing) is required but not installed"]


def test_check_reports_drift_and_accepts_local_labels(monkeypatch):
    monkeypatch.setattr(lock, "project_requirements", lambda extras: [Req("a"), Req("torch")])
    env = _env({"a": "1.0", "c": "1.5", "torch": "2.13.0+cpu"}, {"a": ["c"]})
    assert lock.check("cpu", (), env, {"a": "1.0", "c": "1.5"}, {"torch": "2.13.0"}) == []
    assert lock.check("cpu", (), env, {"a": "1.0", "c": "1.4"}, {"torch": "2.13.0"}) == [
        "c is 1.5, requirements/lock.txt pins 1.4"]
    assert lock.check("cpu", (), env, {"a": "1.0"}, {"torch": "2.12.0"}) == [
        "c 1.5 is installed and needed but not pinned in requirements/lock.txt",
        "torch is 2.13.0+cpu, requirements/cpu.txt pins 2.12.0"]


def test_check_gpu_host_compares_requirements_gpu_txt():
    gpu = lock.machine_pins("gpu")
    host = dict(gpu, torch=gpu["torch"] + "+cu130")
    assert lock.check_gpu_host(_env(host)) == []
    stale = dict(host, triton="3.9.0")
    del stale["flashinfer-python"]
    assert lock.check_gpu_host(_env(stale)) == [
        f"flashinfer-python is not installed (requirements/gpu.txt pins {gpu['flashinfer-python']})",
        f"triton is 3.9.0, requirements/gpu.txt pins {gpu['triton']}"]


def test_staging_scripts_read_their_versions_from_the_pins():
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu/stage-flashinfer.sh"), "--print-versions"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    gpu = lock.machine_pins("gpu")
    assert out == [f"{n}=={gpu[n]}" for n in ("flashinfer-python", "apache-tvm-ffi")]
    marlin = (ROOT / "scripts/gpu/stage-marlin.sh").read_text()
    assert "record_marlin_reference.py --fetch" in marlin and not re.search(r"VLLM_VERSION|0\.2\d\.\d", marlin)


def test_vllm_record_is_of_the_pinned_release():
    meta = json.loads((ROOT / "tests/data/marlin_vllm_record.json").read_text())
    assert meta["vllm_version"] == lock.extra_pin("marlin", "vllm")


def test_environment_yml_installs_the_gpu_pins_on_the_locks_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip[0] == "-r requirements/gpu.txt" and pip[1].startswith("-e .")
    python = re.search(r"CPython (\d+\.\d+)", lock.LOCK.read_text()).group(1)
    assert f"python={python}" in deps


def test_make_installs_from_the_lock_and_checks_it(tmp_path):
    """`make -n` prints what the two README commands run; nothing is executed."""
    venv = tmp_path / "v"

    def dry(*args):
        return subprocess.run(["make", "-n", "--no-print-directory", *args, f"VENV={venv}"], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout

    test = dry("test")
    assert f"{venv}/bin/python -m pip install -q --disable-pip-version-check -r requirements/cpu.txt -e '.[test]'" in test
    assert f"{venv}/bin/python scripts/lock.py check --machine cpu --extras test" in test
    assert test.rstrip().endswith(f'{venv}/bin/python -m pytest -q -m "not slow"')
    reports = dry("reports")
    assert "-r requirements/cpu.txt -e ." in reports and "scripts/lock.py check --machine cpu\n" in reports
    assert reports.rstrip().endswith(f"{venv}/bin/mxfp4lab report all")
    assert "-r requirements/gpu.txt" in dry("setup", "MACHINE=gpu")
    assert (ROOT / ".ci/run").read_text().rstrip().endswith("make test")
