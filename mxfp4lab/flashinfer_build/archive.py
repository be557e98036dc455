"""Reuse a build across machines: the built library (~6 MB, ~1-2 MB as .tar.xz) links only libcudart,
libnvrtc and libtvm_ffi, so a host with the same FlashInfer version, install path, nvcc and flags (same
cache key) can load it without compiling. The build's persisted tactics (``tactics.json``, per GPU model)
travel with it when present, so a new host with the same GPU starts tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .configs import DEFAULT_CONFIGS
from .spec import w4a16_jit_spec
from .tactics import TACTICS_FILE, TacticCache
from .toolchain import MODULE_NAME

_ARCHIVE_MEMBERS = (f"{MODULE_NAME}.so", "spec.json", "BUILD_OK", TACTICS_FILE)


def export_archive(out: Union[str, Path], *, configs=DEFAULT_CONFIGS, **kw) -> Path:
    """Write the built library of this config set (``.so``, ``spec.json``, ``BUILD_OK``, and ``tactics.json``
    when tuned) to a .tar.xz."""
    import tarfile

    spec = w4a16_jit_spec(configs=configs, **kw)
    if not spec.is_built:
        raise FileNotFoundError(f"{MODULE_NAME} is not built at {spec.root}: run `mxfp4lab build` first")
    out = Path(out)
    with tarfile.open(out, "w:xz") as tar:
        for name in _ARCHIVE_MEMBERS:
            f = spec.root / name
            if f.exists():
                tar.add(f, arcname=f"{MODULE_NAME}/{spec.root.name}/{name}")
    return out


def import_archive(archive: Union[str, Path], *, configs=DEFAULT_CONFIGS, check_key: bool = True, **kw) -> Path:
    """Unpack an :func:`export_archive` file into this machine's cache; returns the library path.

    With ``check_key`` (default) the archive's key must equal the key this machine computes for
    ``configs`` (same FlashInfer version and path, nvcc, flags, config list): a mismatched library
    is refused rather than loaded. Only the expected member names are extracted; tactics are merged
    into this machine's (its own entries win) after the same checks as any tactics file.
    """
    import tarfile

    spec = w4a16_jit_spec(configs=configs, **kw)
    with tarfile.open(archive, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        keys = {Path(m.name).parts[-2] for m in members if len(Path(m.name).parts) >= 2}
        if len(keys) != 1:
            raise ValueError(f"{archive}: expected one <key>/ directory, found {sorted(keys)}")
        key = keys.pop()
        if check_key and key != spec.root.name:
            raise ValueError(
                f"{archive} was built for key {key}, this machine's key for configs={configs!r} is "
                f"{spec.root.name} (FlashInfer version/path, nvcc or flags differ): rebuild with `mxfp4lab build`"
            )
        dest = spec.root.parent / key
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            name = Path(m.name).name
            if name not in _ARCHIVE_MEMBERS:
                continue
            data = tar.extractfile(m).read()
            if name == TACTICS_FILE:
                _merge_tactics(data, dest, key)
                continue
            tmp = dest / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o755 if name.endswith(".so") else 0o644)
            tmp.replace(dest / name)
    lib = dest / f"{MODULE_NAME}.so"
    if not lib.exists() or not (dest / "BUILD_OK").exists():
        raise ValueError(f"{archive} does not hold a complete build ({', '.join(_ARCHIVE_MEMBERS)})")
    return lib


def _merge_tactics(data: bytes, dest: Path, key: str) -> None:
    """Add an archive's tactics entries that this build's ``tactics.json`` does not have yet."""
    tmp = dest / f".{TACTICS_FILE}.import"
    tmp.write_bytes(data)
    try:
        incoming = TacticCache(tmp, key)  # validates format, build key and every entry
    finally:
        tmp.unlink(missing_ok=True)
    local = TacticCache(dest / TACTICS_FILE, key)
    for name, ent in incoming.entries.items():
        local.entries.setdefault(name, ent)
    local.save()
