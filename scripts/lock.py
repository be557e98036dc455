#!/usr/bin/env python3
"""The locked set of versions: write it, read it, and check an environment against it.

Files (``requirements/``):

* ``lock.txt`` -- every package that ``mxfp4lab[dev]`` pulls in, except torch, pinned ``name==version``;
  a pip constraints file, written by ``make lock`` (``write`` below) from a fresh virtual environment.
* ``cpu.txt`` / ``gpu.txt`` -- ``-c lock.txt`` plus the torch of that kind of machine. ``gpu.txt`` also
  pins what the GPU host runs (the image's triton, the staged FlashInfer): ``make lock`` holds those.

Commands (run with the interpreter of the environment they look at)::

    python scripts/lock.py check [--machine cpu|gpu] [--extras test]   # installed == locked, or exit 1
    python scripts/lock.py check-gpu-host                               # the GPU host's image and staging
    python scripts/lock.py write --out requirements/lock.txt            # this environment -> the lock
    python scripts/lock.py pin NAME                                     # the locked version of NAME
    python scripts/lock.py held                                         # what `make lock` must not move
    python scripts/lock.py gpu-torch-constraints                        # the GPU torch's own requirements
    python scripts/lock.py resolve-gpu                                  # gpu.txt + lock resolve together

The last two ask the package index (metadata only with a current pip: ``make lock`` upgrades pip in its
throwaway environment), so that one lock fits both torches: e.g. torch 2.11 wants setuptools<82.

The checks walk the requirement closure of ``pyproject.toml`` (markers evaluated for the running
interpreter) through the installed distributions' metadata; the lock and the machine file are the
only source of versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:  # packaging is in the lock; pip vendors a copy (and tomli, for Python 3.10) for a bare interpreter
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pragma: no cover - depends on the interpreter
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
REQ_DIR = ROOT / "requirements"
LOCK = REQ_DIR / "lock.txt"
PROJECT = "mxfp4lab"
# Pinned per kind of machine in requirements/{cpu,gpu}.txt, never in the lock: the CPU machines' torch
# (a CPU build) and the GPU host's (a CUDA build of another release) need different tritons.
PER_MACHINE = {"torch"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")

HEADER = """\
# mxfp4lab's locked versions: every package of mxfp4lab[dev] and its dependencies, except torch, pinned
# exactly. A pip constraints file, read through requirements/cpu.txt (CPU machines: torch {cpu_torch},
# the CPU build) and requirements/gpu.txt (GPU machines: torch {gpu_torch}, as the GPU host's image has it).
# Held at requirements/gpu.txt's versions (what the GPU host runs):
#   {held}.
# Resolved for CPython {python} on Linux x86_64. Written by `make lock`; do not edit by hand.
"""


class LockError(RuntimeError):
    """The lock, a machine file or an environment breaks a rule; the message names the file and rule."""


def norm(name: str) -> str:
    return canonicalize_name(name)


def base_version(version: str) -> str:
    """'2.11.0+cu130' -> '2.11.0': a local label names the build, not the release (torch's +cpu, +cu130)."""
    return version.split("+", 1)[0]


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------
def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements/constraints file -> {normalized name: version}.

    Comments, blank lines and ``-c``/``-r`` lines are skipped; any other line, or a name pinned twice,
    raises LockError naming the file and line."""
    if not path.exists():
        raise LockError(f"{path} does not exist")
    pins: dict[str, str] = {}
    for i, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("-c ", "-r ")):
            continue
        m = _PIN.match(line)
        if not m:
            raise LockError(f"{path.name}:{i}: {raw!r} is not an exact pin 'name==version'")
        name = norm(m.group(1))
        if name in pins:
            raise LockError(f"{path.name}:{i}: {name} is pinned twice")
        pins[name] = m.group(2)
    return pins


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    pins = read_pins(path)
    stray = PER_MACHINE & pins.keys()
    if stray:
        raise LockError(f"{path.name} pins {sorted(stray)}: those belong in requirements/cpu.txt / gpu.txt")
    return pins


def machine_pins(machine: str) -> dict[str, str]:
    path = REQ_DIR / f"{machine}.txt"
    if not path.exists():
        raise LockError(f"no requirements/{machine}.txt (machines: cpu, gpu)")
    text = path.read_text()
    if not re.search(r"^-c lock\.txt\s*$", text, re.MULTILINE):
        raise LockError(f"requirements/{machine}.txt must constrain with '-c lock.txt'")
    pins = read_pins(path)
    if "torch" not in pins:
        raise LockError(f"requirements/{machine}.txt must pin torch")
    return pins


def pin(name: str) -> str:
    pins = lock_pins()
    if norm(name) not in pins:
        raise LockError(f"{norm(name)} is not in requirements/lock.txt")
    return pins[norm(name)]


def project_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """pyproject.toml's dependencies plus those of the named extras (self-references expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    out, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise LockError(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for r in map(Requirement, optional[extra]):
            if norm(r.name) == PROJECT:
                todo.extend(r.extras)
            else:
                out.append(r)
    return out


def extra_pin(extra: str, name: str) -> str:
    """The version pyproject.toml's ``extra`` pins for ``name`` with '==' (vllm in ``marlin``)."""
    pins = [r for r in project_requirements((extra,)) if norm(r.name) == norm(name)]
    specs = [s for r in pins for s in r.specifier]
    if len(specs) != 1 or specs[0].operator != "==":
        raise LockError(f"pyproject.toml's {extra!r} extra must pin exactly one '{name}==X', has {pins}")
    return specs[0].version


# ---------------------------------------------------------------------------------------------------
# the closure of requirements through installed metadata
# ---------------------------------------------------------------------------------------------------
@dataclass
class Installed:
    """Installed distributions, looked up by normalized name (injectable for tests)."""

    versions: dict[str, str]
    requires: dict[str, list[str]]

    @classmethod
    def from_environment(cls) -> Installed:
        versions, requires = {}, {}
        for dist in md.distributions():
            name = norm(dist.metadata["Name"])
            versions.setdefault(name, dist.version)
            requires.setdefault(name, list(dist.requires or []))
        return cls(versions, requires)


def closure(roots: list[Requirement], installed: Installed) -> tuple[dict[str, str], list[str]]:
    """Every distribution the roots need on this interpreter -> ({name: installed version}, problems).

    Walks (distribution, extra) pairs: "" stands for the unconditional requirements; markers are
    evaluated for the running interpreter with that extra."""
    found: dict[str, str] = {}
    problems: list[str] = []
    todo = [r for r in roots if r.marker is None or r.marker.evaluate({"extra": ""})]
    walked: set[tuple[str, str]] = set()
    while todo:
        req = todo.pop(0)
        name = norm(req.name)
        if name not in installed.versions:
            problems.append(f"{name} ({req}) is required but not installed")
            continue
        version = installed.versions[name]
        if req.specifier and not req.specifier.contains(base_version(version), prereleases=True):
            problems.append(f"{name} {version} does not satisfy {req}")
        found[name] = version
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in walked:
                continue
            walked.add((name, extra))
            for line in installed.requires.get(name, []):
                sub = Requirement(line)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    return found, problems


def check(machine: str, extras: tuple[str, ...], installed: Installed | None = None,
          lock: dict[str, str] | None = None, machine_pin: dict[str, str] | None = None) -> list[str]:
    """Problems of the running environment against the lock: empty when it is exactly the locked set."""
    installed = installed or Installed.from_environment()
    lock = lock_pins() if lock is None else lock
    mpins = machine_pins(machine) if machine_pin is None else machine_pin
    found, problems = closure(project_requirements(extras), installed)
    for name, version in sorted(found.items()):
        want = mpins.get(name) if name in PER_MACHINE else lock.get(name)
        source = f"requirements/{machine}.txt" if name in PER_MACHINE else "requirements/lock.txt"
        if want is None:
            problems.append(f"{name} {version} is installed and needed but not pinned in {source}")
        elif base_version(version) != base_version(want):
            problems.append(f"{name} is {version}, {source} pins {want}")
    for name, want in sorted(mpins.items()):
        if name not in PER_MACHINE and lock.get(name, want) != want:
            problems.append(f"requirements/{machine}.txt pins {name}=={want}, the lock {lock[name]}")
    return problems


def check_gpu_host(installed: Installed | None = None) -> list[str]:
    """On the GPU host: what requirements/gpu.txt pins (the image's torch/triton, the staged FlashInfer)."""
    installed = installed or Installed.from_environment()
    problems = []
    for name, want in sorted(machine_pins("gpu").items()):
        have = installed.versions.get(name)
        if have is None:
            problems.append(f"{name} is not installed (requirements/gpu.txt pins {want})")
        elif base_version(have) != base_version(want):
            problems.append(f"{name} is {have}, requirements/gpu.txt pins {want}")
    return problems


def held() -> list[str]:
    """The pins a re-lock resolves around: cpu.txt's torch and gpu.txt's other pins (GPU-host bound)."""
    cpu, gpu = machine_pins("cpu"), machine_pins("gpu")
    return [f"torch=={cpu['torch']}"] + [f"{n}=={v}" for n, v in gpu.items() if n not in PER_MACHINE]


# ---------------------------------------------------------------------------------------------------
# resolving the GPU side (package index, metadata only)
# ---------------------------------------------------------------------------------------------------
def _dry_run(args: list[str]) -> list[dict]:
    """``pip install --dry-run`` of ``args`` -> the report's install list (raises LockError if pip fails)."""
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                            "--disable-pip-version-check", "--report", str(report), *args],
                           capture_output=True, text=True, cwd=ROOT, check=False)
        if r.returncode:
            raise LockError(f"pip could not resolve {' '.join(args)}:\n{r.stderr[-3000:]}")
        return json.loads(report.read_text())["install"]


def gpu_torch_constraints() -> list[str]:
    """requirements/gpu.txt's torch's requirements (markers evaluated, extras dropped) as constraints."""
    torch = f"torch=={machine_pins('gpu')['torch']}"
    (item,) = _dry_run(["--no-deps", torch])
    out = []
    for line in item["metadata"].get("requires_dist", []):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(f"{norm(req.name)}{req.specifier}")
    return out


def resolve_gpu() -> dict[str, str]:
    """Resolve requirements/gpu.txt with mxfp4lab[test] -> the packages it adds to the lock (CUDA libraries)."""
    lock = lock_pins()
    found = {norm(i["metadata"]["name"]): i["metadata"]["version"]
             for i in _dry_run(["-r", "requirements/gpu.txt", "-e", ".[test]"])}
    wrong = {n: v for n, v in found.items() if n in lock and lock[n] != v}
    if wrong:
        raise LockError(f"the GPU resolution moved locked packages: {wrong}")
    return {n: v for n, v in sorted(found.items()) if n not in lock and n != PROJECT}


# ---------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------
def render(pins: dict[str, str], python: str) -> str:
    """The lock file's text: the header (with the machine files' torch/triton) and sorted pins."""
    cpu, gpu = machine_pins("cpu"), machine_pins("gpu")
    held = ", ".join(f"{n} {v}" for n, v in gpu.items() if n not in PER_MACHINE)
    head = HEADER.format(cpu_torch=cpu["torch"], gpu_torch=gpu["torch"], held=held, python=python)
    return head + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def write(out: Path, extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """The running environment's closure of mxfp4lab[extras] (torch left out) -> the lock file."""
    found, problems = closure(project_requirements(extras), Installed.from_environment())
    if problems:
        raise LockError("cannot lock an incomplete environment:\n  " + "\n  ".join(problems))
    pins = {n: v for n, v in found.items() if n not in PER_MACHINE}
    python = ".".join(map(str, sys.version_info[:2]))
    out.write_text(render(pins, python))
    return pins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="the running environment is exactly the locked set")
    c.add_argument("--machine", default="cpu", choices=("cpu", "gpu"))
    c.add_argument("--extras", default="", help="comma-separated extras of mxfp4lab to include (test, dev)")
    sub.add_parser("check-gpu-host", help="torch/triton as requirements/gpu.txt, staged packages as the lock")
    w = sub.add_parser("write", help="write the running environment's closure of mxfp4lab[dev] as the lock")
    w.add_argument("--out", type=Path, default=LOCK)
    p = sub.add_parser("pin", help="print the locked version of a package")
    p.add_argument("name")
    sub.add_parser("held", help="print the requirements a re-lock holds (torch of cpu.txt, gpu.txt's others)")
    sub.add_parser("gpu-torch-constraints", help="print gpu.txt's torch's requirements (asks the index)")
    sub.add_parser("resolve-gpu", help="resolve gpu.txt with the lock (asks the index, installs nothing)")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "gpu-torch-constraints":
            print("\n".join(gpu_torch_constraints()))
            return 0
        if a.cmd == "resolve-gpu":
            extra = resolve_gpu()
            print(f"requirements/gpu.txt resolves with the lock; it adds {len(extra)} packages: "
                  + " ".join(f"{n}=={v}" for n, v in extra.items()))
            return 0
        if a.cmd == "pin":
            print(pin(a.name))
            return 0
        if a.cmd == "held":
            print(" ".join(held()))
            return 0
        if a.cmd == "write":
            pins = write(a.out)
            print(f"{a.out}: {len(pins)} packages pinned")
            return 0
        if a.cmd == "check":
            extras = tuple(e for e in a.extras.split(",") if e)
            problems = check(a.machine, extras)
            what = f"mxfp4lab[{','.join(extras)}]" if extras else "mxfp4lab"
        else:
            problems = check_gpu_host()
            what = "GPU host"
    except LockError as e:
        print(f"lock: {e}", file=sys.stderr)
        return 2
    if problems:
        print(f"lock check FAILED ({what}): the environment is not the locked set\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    print(f"lock check ok ({what}): every installed requirement is the locked version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
