#!/usr/bin/env python3
"""Write (or check) the record of vLLM's Marlin layout functions that the CPU suite compares against.

    python scripts/record_marlin_reference.py            # write tests/data/marlin_vllm_record.{safetensors,json}
    python scripts/record_marlin_reference.py --check    # re-derive from the wheel; exit 1 if the record differs
    python scripts/record_marlin_reference.py --fetch    # only print the wheel's path (downloading it once)

The wheel is the vLLM release that pyproject.toml's ``marlin`` extra pins, taken from ``--wheel``,
``$MXFP4LAB_VLLM_WHEEL`` or the cache (``$MXFP4LAB_WHEEL_CACHE``, default ``~/.cache/mxfp4lab/wheels``),
where ``pip download`` puts it the first time (about 300 MB; scripts/gpu/stage-marlin.sh uses the same
cache). Only numbers are recorded: see tests/vllm_marlin.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import lock  # scripts/lock.py: pyproject's pins

ROOT = Path(__file__).resolve().parents[1]
# The wheel is platform-tagged; the functions recorded are pure Python, so any platform's wheel has them.
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64"]


def vllm_version() -> str:
    try:
        return lock.extra_pin("marlin", "vllm")
    except lock.LockError as e:
        sys.exit(str(e))


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mxfp4lab/wheels"
    return Path(os.environ.get("MXFP4LAB_WHEEL_CACHE", default))


def wheel(explicit: str | None, download: bool = True) -> Path:
    """The pinned vLLM wheel: explicit path, $MXFP4LAB_VLLM_WHEEL, the cache, or pip download into it."""
    given = explicit or os.environ.get("MXFP4LAB_VLLM_WHEEL")
    if given:
        path = Path(given)
        if not path.exists():
            sys.exit(f"vLLM wheel {path} does not exist")
        return path
    version, cache = vllm_version(), cache_dir()
    found = sorted(cache.glob(f"vllm-{version}-*.whl"))
    if not found and download:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading vllm=={version} (no dependencies) into {cache}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        *PLATFORM, f"vllm=={version}", "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"vllm-{version}-*.whl"))
    if not found:
        sys.exit(f"no vllm-{version} wheel in {cache}")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="vLLM wheel (.whl) or unzipped wheel directory")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare the checked-in record with the wheel")
    mode.add_argument("--fetch", action="store_true", help="print the wheel's path, downloading it once")
    a = ap.parse_args(argv)
    path = wheel(a.wheel)
    if a.fetch:
        print(path)
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    import vllm_marlin as vm

    src = vm.VllmSource(path)
    if src.version() != vllm_version():
        sys.exit(f"{path} is vLLM {src.version()}, pyproject.toml's marlin extra pins {vllm_version()}")
    fresh = vm.build_record(src)
    if a.check:
        problems = vm.compare_records(fresh, vm.read_record())
        if problems:
            print(f"record differs from {path.name}:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print(f"record matches {path.name}: {len(fresh[0])} tensors, scalar type ids, inputs")
        return 0
    vm.write_record(*fresh)
    size = vm.RECORD.stat().st_size
    print(f"wrote {vm.RECORD.relative_to(ROOT)} ({size} bytes, {len(fresh[0])} tensors) and "
          f"{vm.RECORD_META.relative_to(ROOT)} from {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
