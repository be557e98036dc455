"""Notebook reports: run ``notebooks/*.ipynb`` through papermill, export self-contained HTML, index them.

Layout of one run (``run_report``)::

    outputs/<YYYY-MM-DD>-<name>/
        <notebook>.ipynb     executed notebook (papermill; parameters injected after the `parameters` cell)
        <notebook>.html      self-contained HTML (figures embedded as data: URIs, no external scripts)
        results.json         key numbers the notebook recorded (record() / save_results())
        run.json             name, parameters, status, timings, versions, git commit
    outputs/index.html       links to every run (rewritten after each run)

A run is built in ``outputs/.tmp-...`` and moved into place only when it succeeded. No run ever replaces
or deletes another: a second run of the same report on the same day gets its own directory
(``<date>-<name>-2``, ``-3``, ...) and the index lists every run. A failed run keeps its partial notebook
in ``outputs/.failed-<date>-<name>[-N]/`` (also never deleted) and raises :class:`ReportError` with the
failing cell's error.

Inside a notebook, :func:`record` collects key results and :func:`save_results` writes them to the
``results_path`` parameter (papermill passes it; interactively it is ``None`` and nothing is written).

Notebooks are stored without outputs and paired with ``notebooks/*.py`` (jupytext percent format,
``notebooks/jupytext.toml``); :func:`check_pairs` verifies each pair holds the same cells.

Longer than most modules (about 580 lines): the runner, its HTML export, the index page and the pair check
all work on the run-directory layout above, and split apart each would have to re-derive it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from . import provenance
from .provenance import REPO_ROOT  # the checkout this package runs from

# --------------------------------------------------------------------------------------------
# Where things are
# --------------------------------------------------------------------------------------------
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
OUTPUT_DIR = REPO_ROOT / "outputs"

#: Report name -> notebook stem in ``notebooks/``. ``all`` runs these in order (those that exist).
REPORTS: Dict[str, str] = {
    "layout": "01_layout_explorer",
    "accuracy": "02_accuracy_drift",
    "latency": "03_latency_crossover",
}
RESULTS_PARAM = "results_path"  # the papermill parameter every notebook declares
DEFAULT_TIMEOUT_S = 600  # per cell


class ReportError(RuntimeError):
    """A report could not be produced; the message says why and where the partial output is."""


# --------------------------------------------------------------------------------------------
# Inside notebooks: record key results
# --------------------------------------------------------------------------------------------
_RESULTS: Dict[str, Any] = {}


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy / torch / pandas scalars and containers (NaN/inf -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch arrays & scalars
        return _jsonable(value.tolist())
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def record(name: str, value: Any) -> Any:
    """Remember one key result (JSON-able after conversion); returns ``value`` for chaining."""
    _RESULTS[str(name)] = _jsonable(value)
    return value


def recorded() -> Dict[str, Any]:
    """A copy of what :func:`record` collected so far in this process."""
    return dict(_RESULTS)


def clear_results() -> None:
    _RESULTS.clear()


def save_results(path: Optional[os.PathLike] = None, **extra: Any) -> Dict[str, Any]:
    """Write the recorded results (plus ``extra``) as JSON to ``path``; no-op write when ``path`` is None.

    Call it in a notebook's last cell with the ``results_path`` parameter. Returns the dict written.
    """
    for k, v in extra.items():
        record(k, v)
    data = recorded()
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".part")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(p)
    return data


# --------------------------------------------------------------------------------------------
# Notebook discovery, parameters
# --------------------------------------------------------------------------------------------
def notebook_path(name: str, notebook_dir: Optional[os.PathLike] = None) -> Path:
    """The notebook of report ``name`` (a key of :data:`REPORTS`, or a notebook stem / path)."""
    nb_dir = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    cands = []
    if name in REPORTS:
        cands.append(nb_dir / f"{REPORTS[name]}.ipynb")
    cands += [Path(name), nb_dir / name, nb_dir / f"{name}.ipynb"]
    cands += sorted(nb_dir.glob(f"[0-9][0-9]_{name}*.ipynb"))
    for c in cands:
        if c.suffix == ".ipynb" and c.is_file():
            return c
    known = ", ".join(available_reports(nb_dir)) or "none"
    raise ReportError(f"no notebook for report {name!r} in {nb_dir} (available: {known})")


def available_reports(notebook_dir: Optional[os.PathLike] = None) -> List[str]:
    """Report names whose notebook exists, in :data:`REPORTS` order, then other ``NN_*.ipynb`` stems."""
    nb_dir = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    names = [n for n, stem in REPORTS.items() if (nb_dir / f"{stem}.ipynb").is_file()]
    known = {f"{s}.ipynb" for s in REPORTS.values()}
    names += [p.stem for p in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")) if p.name not in known]
    return names


def report_name(path: os.PathLike) -> str:
    stem = Path(path).stem
    for n, s in REPORTS.items():
        if s == stem:
            return n
    return stem


def notebook_parameters(path: os.PathLike) -> Dict[str, Any]:
    """Declared parameters (name -> default as written) of a notebook's ``parameters`` cell."""
    import papermill as pm

    return {k: v.get("default") for k, v in pm.inspect_notebook(str(path)).items()}


def notebook_expectations(nb) -> Dict[str, Any]:
    """What tests check for a notebook: ``metadata["mxfp4lab"]`` with ``min_figures`` (image/png
    outputs, default 1) and ``results`` (keys that must be in results.json, default [])."""
    meta = dict(nb.metadata.get("mxfp4lab", {}))
    meta.setdefault("min_figures", 1)
    meta.setdefault("results", [])
    return meta


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: YAML scalar/list/dict (``3`` -> int, ``[1, 2]`` -> list, ``x`` -> str)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_param_file(path: os.PathLike) -> Dict[str, Any]:
    """A YAML (or JSON) parameter file: top-level ``name: value`` pairs apply to every report that
    declares the parameter; a top-level key equal to a report name (``layout:``, ``accuracy:`` ...)
    holds a mapping for that report only (it wins over the shared values)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "is a directory" if p.is_dir() else "does not exist" if not p.exists() else \
              "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (getattr(exc, "strerror", None) or str(exc))
        raise ReportError(f"parameter file {p} {why}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ReportError(f"parameter file {p} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"parameter file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def params_for(name: str, declared: Iterable[str], file_params: Mapping[str, Any],
               cli_params: Mapping[str, Any], strict: bool) -> Dict[str, Any]:
    """Merge shared file values, the report's own file section, then ``-p`` values; keep only declared
    names. ``strict`` (a single report was asked for): an undeclared ``-p`` name is an error."""
    declared = set(declared)
    sections = set(REPORTS) | {name}
    shared = {k: v for k, v in file_params.items() if k not in sections}
    own = file_params.get(name) or {}
    if not isinstance(own, dict):
        raise ReportError(f"parameter file section {name!r} must be a mapping")
    merged: Dict[str, Any] = {}
    for src in (shared, own, cli_params):
        merged.update(src)
    unknown = sorted(set(own) - declared) + (sorted(set(cli_params) - declared) if strict else [])
    if unknown:
        raise ReportError(f"report {name!r}: unknown parameter(s) {unknown}; declared: {sorted(declared)}")
    return {k: v for k, v in merged.items() if k in declared}


# --------------------------------------------------------------------------------------------
# HTML export
# --------------------------------------------------------------------------------------------
_EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Cells with this tag show their output only in the HTML (the findings cell).
REMOVE_INPUT_TAG = "remove-input"


def static_widgets(nb) -> int:
    """Make widget outputs static, in place: drop the widget-view representation where the output has
    another one (``LayoutExplorer`` adds an HTML snapshot) and the saved widget state. The page then needs
    no widget renderer (which nbconvert would load from a CDN) and opens offline. Returns how many
    outputs changed."""
    n = 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if WIDGET_VIEW in data and any(k != WIDGET_VIEW and k != "text/plain" for k in data):
                del data[WIDGET_VIEW]
                n += 1
    nb.metadata.pop("widgets", None)
    return n


def export_html(nb_path: os.PathLike, html_path: os.PathLike, *, hide_input: bool = False,
                offline: bool = True) -> Path:
    """Executed notebook -> one self-contained HTML file (nbconvert ``HTMLExporter``, lab template).

    Output images are inline ``data:image/png;base64`` URIs; ``embed_images`` also inlines images that
    markdown cells reference. ``hide_input`` drops code cells' input (outputs stay); cells tagged
    ``remove-input`` (the findings cell) never show their input. ``offline`` makes widget outputs static
    (:func:`static_widgets`) and removes the template's CDN ``<script src=https://...>`` tags (require.js,
    MathJax), so the page loads with no network (math in markdown then shows as TeX source).
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(nb_path), as_version=4)
    if offline:
        static_widgets(nb)
    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input=hide_input,
                            exclude_input_prompt=hide_input)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=(REMOVE_INPUT_TAG,)), enabled=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(Path(nb_path).parent),
                                                                     "name": Path(nb_path).stem}})
    if offline:
        body = _EXTERNAL_SCRIPT.sub("", body)
    out = Path(html_path)
    out.write_text(body, encoding="utf-8")
    return out


def _retarget_paths(nb_path: Path, old: str, new: str) -> None:
    """Replace the temporary run directory ``old`` by the report's final one ``new`` in the executed
    notebook's sources and text outputs (the injected ``results_path``), so nothing shows a path that is
    gone once the run moves into place."""
    import nbformat

    def swap(v):
        if isinstance(v, str):
            return v.replace(old, new)
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return [swap(x) for x in v] if isinstance(v, list) else v

    nb = nbformat.read(str(nb_path), as_version=4)
    if "papermill" in nb.metadata:  # input/output paths and the parameters papermill injected
        nb.metadata["papermill"] = swap(dict(nb.metadata["papermill"]))
    for cell in nb.cells:
        cell.source = cell.source.replace(old, new)
        for o in cell.get("outputs", []):
            if isinstance(o.get("text"), str):
                o["text"] = o["text"].replace(old, new)
            for k, v in o.get("data", {}).items():
                if k.startswith("text/") and isinstance(v, str):
                    o["data"][k] = v.replace(old, new)
    nbformat.write(nb, str(nb_path))


# --------------------------------------------------------------------------------------------
# Running one report
# --------------------------------------------------------------------------------------------
def _error_summary(nb_path: Path) -> str:
    """The first error output of an executed notebook: cell index, ename, evalue."""
    try:
        import nbformat

        nb = nbformat.read(str(nb_path), as_version=4)
        for i, cell in enumerate(nb.cells):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    return f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
    except Exception:
        pass
    return ""


@contextlib.contextmanager
def _kernel_env():
    """Let the notebook kernel import this very mxfp4lab (a checkout that is not pip-installed too):
    prepend the package's parent directory to PYTHONPATH while the kernel starts."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _free_name(root: Path, base: str) -> Path:
    """The directory :func:`_place` would take now: ``root/base``, else the first free ``base-N``."""
    for n in range(1, 10_000):
        dest = root / (base if n == 1 else f"{base}-{n}")
        if not (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
            return dest
    raise ReportError(f"no free run directory name {base}-N under {root}")


def _place(src: Path, root: Path, base: str) -> Path:
    """Rename ``src`` to ``root/base``, or ``base-2``, ``base-3``, ... (the first name free): no run ever
    replaces another. ``rename`` refuses a non-empty directory, so two processes cannot take one name."""
    for n in range(1, 10_000):
        dest = root / (base if n == 1 else f"{base}-{n}")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            continue
        try:
            src.rename(dest)
            return dest
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
    raise ReportError(f"no free run directory name {base}-N under {root}")


def prepare_out_dir(out_dir: os.PathLike | None) -> Path:
    """The output root (default :data:`OUTPUT_DIR`), created if missing; :class:`ReportError` when it is a
    file or cannot be written."""
    root = Path(out_dir) if out_dir else OUTPUT_DIR
    if root.exists() and not root.is_dir():
        raise ReportError(f"--out {root} is a file, not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".write-check-", dir=root))
        probe.rmdir()
    except OSError as exc:
        raise ReportError(f"cannot write reports under {root}: {exc.strerror or exc}") from None
    return root


def run_report(
    name: str,
    parameters: Optional[Mapping[str, Any]] = None,
    *,
    out_dir: Optional[os.PathLike] = None,
    notebook_dir: Optional[os.PathLike] = None,
    date: Optional[str] = None,
    hide_input: bool = False,
    progress: bool = True,
    log_output: bool = False,
    timeout: Optional[int] = DEFAULT_TIMEOUT_S,
    kernel_name: Optional[str] = None,
    update_index: bool = True,
) -> Path:
    """Execute one notebook with ``parameters`` and produce its report directory; return its path.

    ``name``: a key of :data:`REPORTS` or a notebook stem/path. ``parameters`` are injected by papermill
    (``results_path`` is set here). On failure raises :class:`ReportError`; nothing earlier is touched.
    """
    import papermill as pm

    nb_in = notebook_path(name, notebook_dir)
    rname = report_name(nb_in)
    out_root = prepare_out_dir(out_dir)
    date = date or _dt.date.today().isoformat()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{date}-{rname}-", dir=out_root))
    nb_out = tmp / nb_in.name
    params = dict(parameters or {})
    params[RESULTS_PARAM] = str(tmp / "results.json")
    run_info: Dict[str, Any] = dict(
        name=rname, notebook=str(nb_in.relative_to(REPO_ROOT) if nb_in.is_relative_to(REPO_ROOT) else nb_in),
        parameters={k: v for k, v in params.items() if k != RESULTS_PARAM},
        date=date, started=_dt.datetime.now().isoformat(timespec="seconds"), python=sys.version.split()[0],
        git_commit=provenance.git_commit(), source_digest=provenance.process_source_digest(), host=os.uname().nodename,
        status="running",
    )
    t0 = time.perf_counter()
    try:
        try:
            with _kernel_env():
                pm.execute_notebook(
                    str(nb_in), str(nb_out), parameters=params, cwd=str(nb_in.parent), progress_bar=progress,
                    log_output=log_output, execution_timeout=timeout, kernel_name=kernel_name,
                    report_mode=hide_input,
                )
        except Exception as e:  # papermill's own exceptions vary
            where = _error_summary(nb_out) if nb_out.exists() else ""
            raise ReportError(f"notebook {nb_in.name} failed: {where or type(e).__name__ + ': ' + str(e)}") from e
        run_info["execute_s"] = round(time.perf_counter() - t0, 2)
        planned = _free_name(out_root, f"{date}-{rname}")  # where the run will live (checked again below)
        _retarget_paths(nb_out, str(tmp), str(planned))
        t1 = time.perf_counter()
        try:
            export_html(nb_out, tmp / f"{nb_in.stem}.html", hide_input=hide_input)
        except Exception as e:  # nbconvert template errors vary
            raise ReportError(f"HTML export of {nb_out.name} failed: {type(e).__name__}: {e}") from e
        run_info["html_s"] = round(time.perf_counter() - t1, 2)
        results_file = tmp / "results.json"
        if not results_file.exists():
            raise ReportError(f"notebook {nb_in.name} wrote no {results_file.name} "
                              f"(its last cell should call mxfp4lab.report.save_results(results_path))")
        run_info.update(status="ok", seconds=round(time.perf_counter() - t0, 2),
                        html=f"{nb_in.stem}.html", executed=nb_in.name, results="results.json")
        (tmp / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        tmp.chmod(0o755)
        final = _place(tmp, out_root, f"{date}-{rname}")  # a new directory: earlier runs stay
        if final != planned:  # another run took the planned name meanwhile
            _retarget_paths(final / nb_in.name, str(planned), str(final))
            html_file = final / f"{nb_in.stem}.html"
            html_file.write_text(html_file.read_text(encoding="utf-8").replace(str(planned), str(final)),
                                 encoding="utf-8")
    except ReportError as e:
        run_info.update(status="failed", error=str(e), seconds=round(time.perf_counter() - t0, 2))
        try:
            (tmp / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
            failed = _place(tmp, out_root, f".failed-{date}-{rname}")
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            failed = None
        if update_index:
            write_index(out_root)
        kept = f"partial output kept in {failed}" if failed else "no partial output kept"
        raise ReportError(f"{e}\n  {kept}; earlier reports untouched") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if update_index:
        write_index(out_root)
    return final


def run_reports(names: Sequence[str], *, parameters: Optional[Mapping[str, Any]] = None,
                param_file: Optional[os.PathLike] = None, out_dir: Optional[os.PathLike] = None,
                notebook_dir: Optional[os.PathLike] = None, hide_input: bool = False, progress: bool = True,
                log_output: bool = False, timeout: Optional[int] = DEFAULT_TIMEOUT_S,
                echo=print) -> Dict[str, Any]:
    """Run several reports (``["all"]`` = every available one); returns name -> Path or ReportError.

    Parameters are filtered per notebook (see :func:`params_for`). Continues after a failure so one
    broken notebook does not hide the others; the caller decides the exit status.
    """
    nb_dir = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    if list(names) == ["all"] or "all" in names:
        names = available_reports(nb_dir)
        missing = [n for n in REPORTS if n not in names]
        if missing:
            echo(f"note: no notebook yet for {', '.join(missing)} (skipped)")
    for n in names:  # every name resolves before anything runs or is written
        notebook_path(n, nb_dir)
    file_params = load_param_file(param_file) if param_file else {}
    prepare_out_dir(out_dir)
    cli_params = dict(parameters or {})
    strict = len(names) == 1
    results: Dict[str, Any] = {}
    declared_any: set = set()
    for i, n in enumerate(names, 1):
        try:
            nb = notebook_path(n, nb_dir)
            declared = notebook_parameters(nb)
            declared_any |= set(declared)
            params = params_for(report_name(nb), declared, file_params, cli_params, strict)
            echo(f"[{i}/{len(names)}] {report_name(nb)}: {nb.name} "
                 f"{json.dumps(params, default=str) if params else '(defaults)'}")
            t0 = time.perf_counter()
            path = run_report(n, params, out_dir=out_dir, notebook_dir=nb_dir, hide_input=hide_input,
                              progress=progress, log_output=log_output, timeout=timeout)
            echo(f"[{i}/{len(names)}] {report_name(nb)}: ok in {time.perf_counter() - t0:.1f} s -> "
                 f"{path / (nb.stem + '.html')}")
            results[n] = path
        except ReportError as e:
            echo(f"[{i}/{len(names)}] {n}: FAILED: {e}")
            results[n] = e
    unused = sorted(set(cli_params) - declared_any)
    if unused and not strict:
        echo(f"warning: parameter(s) {unused} declared by none of {list(names)}")
    return results


# --------------------------------------------------------------------------------------------
# Index page
# --------------------------------------------------------------------------------------------
def write_index(out_dir: Optional[os.PathLike] = None) -> Path:
    """(Re)write ``<out_dir>/index.html``: one row per run with a ``run.json``, newest first, with its
    findings (:mod:`mxfp4lab.report_index`)."""
    from .report_index import write_index as _write

    return _write(Path(out_dir) if out_dir else OUTPUT_DIR)


# --------------------------------------------------------------------------------------------
# jupytext pairing
# --------------------------------------------------------------------------------------------
def _cells(nb) -> List[tuple]:
    out = []
    for c in nb.cells:
        tags = tuple(sorted(c.metadata.get("tags", [])))
        out.append((c.cell_type, c.source.strip(), tags))
    return out


def check_pairs(notebook_dir: Optional[os.PathLike] = None, *, require_no_outputs: bool = True) -> List[str]:
    """Problems with the ``notebooks/*.ipynb`` <-> ``notebooks/*.py`` (percent) pairs; ``[]`` = in sync.

    For each pair, jupytext reads both and the cell types, sources and tags must match. Also reported:
    an ``.ipynb`` without its ``.py`` (or the reverse, for ``.py`` files in percent format) and, with
    ``require_no_outputs``, stored outputs / execution counts in an ``.ipynb``.
    Fix a drift with ``jupytext --sync notebooks/<name>.ipynb`` (the newer file wins).
    """
    import jupytext

    nb_dir = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    problems: List[str] = []
    ipynbs = sorted(nb_dir.glob("*.ipynb"))
    pys = sorted(p for p in nb_dir.glob("*.py") if "# %%" in p.read_text(errors="replace"))
    for p in pys:
        if not p.with_suffix(".ipynb").exists():
            problems.append(f"{p.name}: no paired {p.stem}.ipynb")
    for nb_path in ipynbs:
        py = nb_path.with_suffix(".py")
        if not py.exists():
            problems.append(f"{nb_path.name}: no paired {py.name} (run: jupytext --sync {nb_path})")
            continue
        a = jupytext.read(str(nb_path))
        b = jupytext.read(str(py), fmt="py:percent")
        ca, cb = _cells(a), _cells(b)
        if len(ca) != len(cb):
            problems.append(f"{nb_path.name} has {len(ca)} cells, {py.name} has {len(cb)}")
        for i, (x, y) in enumerate(zip(ca, cb)):
            if x != y:
                what = "type" if x[0] != y[0] else "tags" if x[2] != y[2] else "source"
                problems.append(f"{nb_path.name} vs {py.name}: cell {i} differs in {what}")
        if require_no_outputs:
            for i, c in enumerate(a.cells):
                if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")):
                    problems.append(f"{nb_path.name}: cell {i} has stored outputs (store notebooks without "
                                    f"outputs: jupyter nbconvert --clear-output --inplace {nb_path})")
                    break
    return problems
