"""Where OpenAI's ``triton_kernels`` comes from: the copy bundled in one pinned vLLM wheel.

``triton_kernels`` (``matmul_ogs``, the Hopper MX layouts, ``routing``) is not on PyPI under that name
(PyPI's ``triton-kernels`` is an unrelated package). vLLM wheels bundle it as
``vllm/third_party/triton_kernels`` (40 files of pure Python + Triton, 232 kB) and make it importable as
``triton_kernels``. :data:`VLLM_VERSION` pins the wheel whose copy runs on Triton 3.6.0 (the GPU
host's); :data:`MANIFEST` holds the sha256 of each of its 40 files, so any copy found or fetched is
checked to be exactly that one.

Lookup order (:func:`find_source`): ``$MXFP4LAB_TRITON_KERNELS`` (a folder holding ``triton_kernels/``,
e.g. ``.devcarry/triton_kernels`` from ``scripts/gpu/stage-triton-kernels.sh``), an importable
``triton_kernels`` package, ``vllm/third_party`` of an installed vLLM (located, not imported), then the
user cache written by :func:`fetch` (``$XDG_CACHE_HOME/mxfp4lab/triton_kernels-vllm-<version>``).

:func:`fetch` extracts only that folder from the wheel: from a local wheel file, or straight from the
package index with HTTP range reads (about 1 MB instead of the 304 MB wheel)::

    python -m mxfp4lab.backends.triton_kernels_source [--wheel vllm-0.26.0-...whl] [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import sys
import urllib.request
import zipfile
from pathlib import Path

VLLM_VERSION = "0.26.0"
WHEEL = f"vllm-{VLLM_VERSION}-cp38-abi3-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "adb1e4c9b46d0dfdb094121ae5aad670a42412dd813ed4e5db069ed6a15006de"
WHEEL_PREFIX = "vllm/third_party/"
INDEX_URL = "https://pypi.org/simple/vllm/"
ENV_PATH = "MXFP4LAB_TRITON_KERNELS"

#: sha256 of every file of ``vllm/third_party/triton_kernels`` in :data:`WHEEL` (paths below third_party/)
MANIFEST = {
    "triton_kernels/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "triton_kernels/compaction.py": "34919681c109b47d3bad6dd2d31a169371cd353e88137feebc1c8c6a49f2c032",
    "triton_kernels/compaction_details/_masked_compaction.py": "80575b48b4d9969169dcef2adc2888d9fe18a15162a0e9a53190802d6b4d7178",
    "triton_kernels/matmul_ogs.py": "56061a61a2d018245b4a6ee3e41ff79d9f6cf089ffc072d1ca95fb5ded1da4a2",
    "triton_kernels/matmul_ogs_details/_common.py": "08787760becc4590c1dc3fa3f98308b78a66e730a19cee9b0d77c1e8a99b45f7",
    "triton_kernels/matmul_ogs_details/_matmul_ogs.py": "c192e1d30f60f2c292744f37149f9363d76a825728610783d1eb533be284a921",
    "triton_kernels/matmul_ogs_details/_p_matmul_ogs.py": "96159a4e7ac1cb220e99f5cbe60f991c68b9012b88b555678d607f1b32d2c839",
    "triton_kernels/matmul_ogs_details/_reduce_grouped.py": "f67a8632e89012e745b1c7fed7f6ee031f0478752644669ccc29425be20bac49",
    "triton_kernels/matmul_ogs_details/opt_flags.py": "19e20f1cb9cf1f61bba0b2787f8ecda47183e17773fbadded02bd4ee48f9c719",
    "triton_kernels/matmul_ogs_details/opt_flags_details/opt_flags_amd.py": "9426288afcfd8ba29a3723d0a889f286e83312d212e210ee4bb49b94c521e02f",
    "triton_kernels/matmul_ogs_details/opt_flags_details/opt_flags_nvidia.py": "cea9971a3b39fdb90257563bf16beda190368f3b4126f71c48270bccda5635f3",
    "triton_kernels/numerics.py": "74e775d0084578bdc668872de76c6a72450406d2f19e86b2c7db7371ee20e860",
    "triton_kernels/numerics_details/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "triton_kernels/numerics_details/flexpoint.py": "5596fd01d03991d94cec364342393b41523c629abe7f166d5e9d1229a4c56061",
    "triton_kernels/numerics_details/mxfp.py": "c115715b9add3247084c4576247e88c7f525bf13834d0d7ab41b3d0e9c6c57ce",
    "triton_kernels/numerics_details/mxfp_details/_downcast_to_mxfp.py": "6908f774b3c1d949196d7a1b6b4c6ad4b1e2c36f78877a7e35437a675fa29b54",
    "triton_kernels/numerics_details/mxfp_details/_upcast_from_mxfp.py": "50298d8b908b1355cd0f82364abe748a540f20ae5f1d9c7df1618bc2a918c56c",
    "triton_kernels/proton_opts.py": "0443785ec981dcf9267c727f6b3c07e8a3444888be191443edf6afc858b5f1c3",
    "triton_kernels/reduction_details/reduce_bitmatrix.py": "83c92ebb11a35556c7185e3aeb487802f4e280de158f291e5dddf95407d725fd",
    "triton_kernels/routing.py": "0aa55772883118d0eec936d8058f682f35074089e85fb9cfc87215ac97f11899",
    "triton_kernels/routing_details/_expt_data.py": "13defd26d0da5bf6b2f3cbd945c748096a9293117de8c1d9f13b877836c1a80e",
    "triton_kernels/routing_details/_routing_compute.py": "987c5b9e68ea589a40d07854cb49699943f2193a8ef867e9e7708c3a5066719b",
    "triton_kernels/specialize.py": "e8d94b8912af3ca58c6e4557c8c07bdf1e3a5b3206d55af99ea7fb6f79311e80",
    "triton_kernels/swiglu.py": "6f22081f81630cdb1eff3515e7f335d2ebd7110ec70c646320e58227758e4a8d",
    "triton_kernels/swiglu_details/_swiglu.py": "230fb476dccc603ac8b633003c9a356d297482c071e48ed22e857c1fd1b8f67a",
    "triton_kernels/target_info.py": "4003467834f8a5c4c80f8f0bc77bc396025e77fbd9ae89083cb438e10a1a1a77",
    "triton_kernels/tensor.py": "e08640c83d78a45a01bca8f874b9a69e759976c785ea38047a2b52e0a049a24e",
    "triton_kernels/tensor_details/layout.py": "dbfe89fb74e1c377676a299cfcdd08aaead03a2aac160833b478cccf1222cafe",
    "triton_kernels/tensor_details/layout_details/base.py": "2223c16c379d5c47adb29eaf8b5e6a4fcd760a7b864f5591fa68847caffb04a2",
    "triton_kernels/tensor_details/layout_details/blackwell_scale.py": "e60a5969b587dbd8e5fa675cf751cf3b5f93f7d43013a70318c0ac0f49a56611",
    "triton_kernels/tensor_details/layout_details/blackwell_value.py": "abf4653fc4b6641f6a79e2af9fbae2d50093a01dbea20c10c05f6b9de931cda8",
    "triton_kernels/tensor_details/layout_details/cdna4_scale.py": "0dc2bbf97fc70f9b919436411a1ae7557c5676bbbbcf63501b63962ec6088c8a",
    "triton_kernels/tensor_details/layout_details/hopper_scale.py": "dd7ed682636b6bfa93e394b9087b208e9fe0a013b202adbeac43e3c034115f48",
    "triton_kernels/tensor_details/layout_details/hopper_value.py": "21e97c9800ff325525d5274344f7e82afcd72af537524b027806df6b31b74faf",
    "triton_kernels/tensor_details/layout_details/strided.py": "86504afe2d2033068e862e21f41c0e8e53b05dca85544412565f6de6b41d4835",
    "triton_kernels/testing.py": "a2ba392036876caf15cb2071353ad3cc66e7a2a1048a39fa267d340d1c8e7592",
    "triton_kernels/topk.py": "db3baedc20e07d41c38d0bbc89710e2bbf43373d29348388f06b91d75dd58371",
    "triton_kernels/topk_details/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "triton_kernels/topk_details/_topk_backward.py": "4820d74485e8eecfbc62cdbcca6c8b30f95da8e692e623ac3dd4983e6b5467b1",
    "triton_kernels/topk_details/_topk_forward.py": "b96cd075eec221f009d9a32139605b9966f28edf6385ee166108f3768a6599f6",
}


class SourceError(RuntimeError):
    """No usable copy of triton_kernels (the message says where it looked and how to get one)."""


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mxfp4lab" / f"triton_kernels-vllm-{VLLM_VERSION}"


def mismatches(root: Path) -> list[str]:
    """Files of :data:`MANIFEST` missing under ``root`` or with another sha256 (empty: the pinned copy)."""
    bad = []
    for rel, sha in MANIFEST.items():
        p = root / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != sha:
            bad.append(f"{rel}: sha256 differs")
    return bad


def _candidates():
    if os.environ.get(ENV_PATH):
        yield f"${ENV_PATH}", Path(os.environ[ENV_PATH])
    for name, sub in (("triton_kernels", ".."), ("vllm", "third_party")):
        try:
            spec = importlib.util.find_spec(name)  # locates, does not run the package's __init__
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            yield f"importable {name}", Path(next(iter(spec.submodule_search_locations))) / sub
    yield "user cache", cache_dir()


def find_source(require_pinned: bool = True) -> tuple[Path, str]:
    """-> (folder holding ``triton_kernels/``, how it was found). Raises :class:`SourceError`."""
    tried = []
    for how, root in _candidates():
        root = root.resolve()
        if not (root / "triton_kernels" / "matmul_ogs.py").is_file():
            tried.append(f"{how} ({root}): no triton_kernels/matmul_ogs.py")
            continue
        bad = mismatches(root) if require_pinned else []
        if bad:
            tried.append(f"{how} ({root}): not vLLM {VLLM_VERSION}'s copy ({'; '.join(bad[:3])})")
            continue
        return root, how
    raise SourceError("triton_kernels not found; looked at: " + " | ".join(tried) + ". Get the pinned copy with "
                      "`python -m mxfp4lab.backends.triton_kernels_source` (or set $" + ENV_PATH + ")")


def import_triton_kernels(require_pinned: bool = True):
    """Import ``triton_kernels`` from :func:`find_source` (its folder goes first on ``sys.path``)."""
    if "triton_kernels" in sys.modules:
        return sys.modules["triton_kernels"]
    root, _ = find_source(require_pinned)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import triton_kernels

    return triton_kernels


class _HttpRangeFile(io.RawIOBase):
    """Read-only, seekable view of a remote file through HTTP range requests (1 MiB blocks, cached)."""

    BLOCK = 1 << 20

    def __init__(self, url: str, size: int):
        self.url, self.size, self.pos, self._blocks = url, size, 0, {}

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def _block(self, i: int) -> bytes:
        if i not in self._blocks:
            lo, hi = i * self.BLOCK, min(self.size, (i + 1) * self.BLOCK) - 1
            req = urllib.request.Request(self.url, headers={"Range": f"bytes={lo}-{hi}"})
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
            if len(data) != hi - lo + 1:
                raise SourceError(f"range read {lo}-{hi} of {self.url} returned {len(data)} bytes")
            self._blocks[i] = data
        return self._blocks[i]

    def read(self, n=-1):
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = bytearray()
        while self.pos < end:
            b = self._block(self.pos // self.BLOCK)
            off = self.pos % self.BLOCK
            chunk = b[off: off + end - self.pos]
            out += chunk
            self.pos += len(chunk)
        return bytes(out)


def _remote_wheel() -> _HttpRangeFile:
    req = urllib.request.Request(INDEX_URL, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    for f in files:
        if f["filename"] == WHEEL:
            if f.get("hashes", {}).get("sha256") != WHEEL_SHA256:
                raise SourceError(f"the index lists {WHEEL} with sha256 {f.get('hashes')}, expected {WHEEL_SHA256}")
            return _HttpRangeFile(f["url"], int(f["size"]))
    raise SourceError(f"{WHEEL} is not listed at {INDEX_URL}")


def fetch(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Extract ``triton_kernels/`` of :data:`WHEEL` into ``dest`` (default :func:`cache_dir`) and check it
    against :data:`MANIFEST`; returns ``dest``. ``wheel``: a local copy of the wheel (else the index)."""
    dest = Path(dest or cache_dir())
    if (dest / "triton_kernels").is_dir() and not mismatches(dest):
        return dest
    tmp = dest.with_name(dest.name + ".part")
    with (open(wheel, "rb") if wheel else _remote_wheel()) as src, zipfile.ZipFile(src) as z:
        for rel in MANIFEST:
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(WHEEL_PREFIX + rel))
    bad = mismatches(tmp)
    if bad:
        raise SourceError(f"extracted copy does not match the manifest: {bad[:5]}")
    (tmp / "SOURCE").write_text(f"{WHEEL} sha256 {WHEEL_SHA256}: {WHEEL_PREFIX}triton_kernels ({len(MANIFEST)} files)\n")
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", type=Path, help=f"local {WHEEL} (default: range reads from {INDEX_URL})")
    ap.add_argument("--dest", type=Path, help=f"output folder (default {cache_dir()})")
    a = ap.parse_args(argv)
    path = fetch(a.dest, a.wheel)
    print(f"triton_kernels from {WHEEL} ({len(MANIFEST)} files, manifest checked) in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
