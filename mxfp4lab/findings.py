"""Findings: what a report found, one line per question, generated from the numbers the report recorded.

A :class:`Finding` is ``(question, verdict, detail, status)``:

* ``question`` -- what was asked, e.g. ``"claim at M <= 64"`` (stable across runs: the index matches
  findings of two runs by it);
* ``verdict`` -- the short answer, e.g. ``"does not hold"``, ``"bit-exact"``, ``"marlin_mxfp4 M 1-64,
  flashinfer_sm90 M 128-16384"``; the index flags a run whose verdict differs from the previous run's;
* ``detail`` -- the numbers behind it (free text, may change every run without being flagged);
* ``status`` -- one of :data:`STATUSES`: ``good`` (the expected/desired answer), ``bad`` (a check failed or a
  claim does not hold), ``mixed`` (partly), ``info`` (a measurement with no pass/fail), ``missing`` (not
  measured here, with the reason in ``detail``).

Notebooks open with a findings cell (:func:`placeholder`, tagged ``remove-input``) that the last cell fills
from the run's results (:func:`publish`); the findings are also stored in ``results.json`` under ``"findings"``
and the index page shows them (:mod:`mxfp4lab.report`). Standard library only.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("good", "bad", "mixed", "info", "missing")
#: Badge colours (background) per status, for HTML.
STATUS_COLORS = {"good": "#1a7f37", "bad": "#cf222e", "mixed": "#bf8700", "info": "#57606a", "missing": "#8c959f"}
STATUS_SYMBOLS = {"good": "yes", "bad": "no", "mixed": "partly", "info": "info", "missing": "n/a"}
RESULTS_KEY = "findings"


@dataclass(frozen=True)
class Finding:
    """One question a report answers (module docstring)."""

    question: str
    verdict: str
    detail: str = ""
    status: str = "info"

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Finding {self.question!r}: status must be one of {STATUSES}, got {self.status!r}")
        if not self.question or not self.verdict:
            raise ValueError(f"Finding needs a question and a verdict (got {self.question!r}, {self.verdict!r})")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def of(cls, d: dict[str, Any]) -> Finding:
        return cls(str(d["question"]), str(d["verdict"]), str(d.get("detail") or ""), str(d.get("status") or "info"))

    def line(self) -> str:
        """``question: verdict (detail)`` in one line of text."""
        return f"{self.question}: {self.verdict}" + (f" ({self.detail})" if self.detail else "")


def as_findings(items: Iterable[Any]) -> list[Finding]:
    """Findings from :class:`Finding` objects or their dicts (as stored in results.json)."""
    return [f if isinstance(f, Finding) else Finding.of(f) for f in items or []]


def badge(status: str) -> str:
    color = STATUS_COLORS.get(status, STATUS_COLORS["info"])
    return (f"<span style='background:{color};color:#fff;border-radius:3px;padding:0 5px;font-size:85%;"
            f"white-space:nowrap'>{html.escape(STATUS_SYMBOLS.get(status, status))}</span>")


def to_html(findings: Sequence[Any], *, title: str = "Findings", note: str = "") -> str:
    """A compact table: badge | question | verdict | detail."""
    rows = "".join(
        f"<tr><td style='text-align:left'>{badge(f.status)}</td><td style='text-align:left'><b>{html.escape(f.question)}"
        f"</b></td><td style='text-align:left'>{html.escape(f.verdict)}</td>"
        f"<td style='text-align:left;color:#444'>{html.escape(f.detail)}</td></tr>"
        for f in as_findings(findings))
    foot = f"<p style='font-size:85%;color:#555'>{html.escape(note)}</p>" if note else ""
    return (f"<div class='mxfp4lab-findings'><h2>{html.escape(title)}</h2>"
            f"<table style='border-collapse:collapse;font-size:95%'>{rows}</table>{foot}</div>")


def to_text(findings: Sequence[Any]) -> str:
    return "\n".join(f"[{STATUS_SYMBOLS[f.status]:>6}] {f.line()}" for f in as_findings(findings))


class _Rich:
    """A display object with HTML and plain-text forms (the findings cell's output)."""

    def __init__(self, html_text: str, text: str):
        self.html, self.text = html_text, text

    def _repr_html_(self):
        return self.html

    def __repr__(self):
        return self.text


PENDING = "Findings appear here when the notebook has run to its last cell."


def placeholder(title: str = "Findings"):
    """Show a findings box to be filled later (:func:`publish`); returns its display handle (None
    outside IPython)."""
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return None
    return display(_Rich(to_html([], title=title, note=PENDING), PENDING), display_id=True)


def publish(handle, findings: Sequence[Any], *, title: str = "Findings", note: str = "") -> list[dict[str, str]]:
    """Fill the findings cell (``handle`` from :func:`placeholder`; None: display here) and return the
    findings as dicts (record them under :data:`RESULTS_KEY`)."""
    fs = as_findings(findings)
    obj = _Rich(to_html(fs, title=title, note=note), to_text(fs))
    if handle is not None:
        handle.update(obj)
    else:
        try:
            from IPython.display import display

            display(obj)
        except ImportError:  # pragma: no cover
            print(obj.text)
    return [f.as_dict() for f in fs]


def changes(previous: Sequence[Any] | None, current: Sequence[Any]) -> dict[str, str]:
    """question -> the previous verdict, for every question whose verdict differs between two runs
    (new questions and questions no longer asked are not changes)."""
    if not previous:
        return {}
    before = {f.question: f.verdict for f in as_findings(previous)}
    return {f.question: before[f.question] for f in as_findings(current)
            if f.question in before and before[f.question] != f.verdict}


# ---------------------------------------------------------------- small helpers for the studies' findings
def span(values: Sequence[Any]) -> str:
    """A run of grid points as ``"first-last"`` (one point: ``"first"``; none: ``"-"``)."""
    v = list(values)
    if not v:
        return "-"
    return f"{v[0]}" if len(v) == 1 else f"{v[0]}-{v[-1]}"


def runs_on_grid(grid: Sequence[Any], labels: Sequence[Any]) -> list[tuple]:
    """Consecutive stretches of equal labels along ``grid``: ``[(label, [g0, g1, ...]), ...]``."""
    out: list[tuple] = []
    for g, lab in zip(grid, labels):
        if out and out[-1][0] == lab:
            out[-1][1].append(g)
        else:
            out.append((lab, [g]))
    return out


def pct_range(values: Sequence[float]) -> str:
    """``[0.12, 0.26]`` -> ``"12-26%"`` (one value: ``"12%"``)."""
    v = sorted(100 * x for x in values)
    if not v:
        return "-"
    lo, hi = round(v[0]), round(v[-1])
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"
