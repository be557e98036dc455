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
