"""scripts/gpu/job.sh (the GPU job runner) on the CPU: steps run in order, each leaves its log and result
file in OUT as it goes, a failing step is recorded without stopping the rest, provenance comes first."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "scripts" / "gpu" / "job.sh"


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # python3 = this python
    return env


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_steps_run_in_order_and_leave_their_files(tmp_path):
    steps = tmp_path / "steps.txt"
    steps.write_text(
        "# a comment, then a blank line\n\n"
        "first   python3 -c \"import json; json.dump({'x': 1}, open('{out}', 'w'))\"\n"
        "broken  python3 -c \"import sys; print('about to fail'); sys.exit(3)\"\n"
        "third   ls {dir} && echo third-ran\n"
    )
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(JOB), "run", str(out), str(steps)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "first.json").read_text()) == {"x": 1}
    assert "about to fail" in (out / "broken.log").read_text()
    assert "third-ran" in (out / "third.log").read_text() and (out / "third").is_dir()
    log = (out / "job.log").read_text().splitlines()
    assert [ln.split()[2] for ln in log] == ["first:", "first:", "broken:", "broken:", "third:", "third:"]
    assert "exit 3" in log[3] and "exit 0" in log[5]
    assert (out / "FAILED").read_text().split() == ["broken"] and not (out / "DONE").exists()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["python"] and "date" in prov
    f = subprocess.run(["bash", str(JOB), "follow", str(out), "5"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=60)
    assert f.returncode == 1 and "FAILED: broken" in f.stdout


def _step_commands(path):
    """(step name, env, argv) of every command of every step of a steps file: job.sh's NAME COMMAND lines (# comments
    and blank lines skipped), {out} / {dir} filled in, each command of a `a && b || c` chain on its own, leading VAR=value
    assignments in env and a leading `timeout N` dropped."""
    import re
    import shlex

    out, names = [], []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, cmd = line.split(maxsplit=1)
        names.append(name)
        cmd = cmd.replace("{out}", f"/tmp/OUT/{name}.json").replace("{dir}", f"/tmp/OUT/{name}")
        for part in re.split(r"&&|\|\|", cmd):
            argv, env = shlex.split(part), {}
            while argv and re.match(r"[A-Z_][A-Z0-9_]*=", argv[0]):
                k, v = argv.pop(0).split("=", 1)
                env[k] = v
            if argv[:1] == ["timeout"]:
                argv = argv[2:]
            out.append((name, env, argv))
    assert len(set(names)) == len(names), f"{path.name}: step names repeat (each names its log and result file)"
    return out


STEP_FILES = sorted((ROOT / "scripts" / "gpu").glob("*.steps"))


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: p.name)
def test_every_steps_file_runs_with_todays_code(path):
    """A GPU lease is too short to find a typo in: every `python3 -m mxfp4lab` command of every steps file parses with
    today's CLI, every `python3 scripts/...` script exists, and every pinned decode variant
    ($MXFP4LAB_DECODE_VARIANT) is one the library compiles."""
    from mxfp4lab import cli
    from mxfp4lab.kernels.decode_variants import VARIANTS

    parser = cli.build_parser()
    commands = _step_commands(path)
    assert commands, f"{path.name} has no step"
    for name, env, argv in commands:
        if "MXFP4LAB_DECODE_VARIANT" in env:
            assert int(env["MXFP4LAB_DECODE_VARIANT"]) in VARIANTS, (path.name, name)
        if argv[:3] == ["python3", "-m", "mxfp4lab"]:
            args = parser.parse_args(argv[3:])  # argparse exits (a failing test) on an unknown option or value
            assert callable(args.func), (path.name, name)
        elif argv[:1] == ["python3"] and argv[1].startswith("scripts/"):
            assert (ROOT / argv[1]).is_file(), (path.name, name, argv[1])
