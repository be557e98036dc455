"""The index page of a report directory (``outputs/index.html``): one row per run, newest first, each
with its one-line findings (:mod:`mxfp4lab.findings`) instead of raw numbers.

A finding whose verdict differs from the same report's previous run is marked "changed" with the old verdict
beside it, and the run's row says how many verdicts changed, so a scheduled run that moves a conclusion
stands out. Runs recorded before findings existed show their first result keys instead.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Any

from .findings import RESULTS_KEY, as_findings, badge, changes

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;width:100%} td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#eee} ul.f{margin:0;padding-left:0;list-style:none} ul.f li{margin:2px 0}
.changed{background:#fff3c4} .was{color:#8a6d00;font-size:85%} .detail{color:#555;font-size:85%}
.flag{background:#bf8700;color:#fff;border-radius:3px;padding:0 5px;font-size:85%}"""


def _summ(value: Any, limit: int = 60) -> str:
    s = json.dumps(value, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def load_runs(root: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(directory name, run.json, results.json)`` of every finished run under ``root``, newest first."""
    runs = []
    for rj in root.glob("*/run.json"):
        if rj.parent.name.startswith("."):
            continue
        try:
            info = json.loads(rj.read_text())
        except (OSError, ValueError):
            continue
        res: dict[str, Any] = {}
        rf = rj.parent / info.get("results", "results.json")
        if rf.exists():
            try:
                res = json.loads(rf.read_text())
            except ValueError:
                res = {}
        runs.append((rj.parent.name, info, res))
    runs.sort(key=lambda r: (r[1].get("date", ""), r[1].get("started", ""), r[0]), reverse=True)
    return runs


def _findings_html(res: dict[str, Any], previous: dict[str, Any] | None) -> tuple[str, int]:
    """(HTML list of the run's findings, number of changed verdicts vs ``previous``)."""
    fs = res.get(RESULTS_KEY)
    if not fs:
        keys = "<br>".join(f"{html.escape(k)} = {html.escape(_summ(v))}" for k, v in list(res.items())[:6])
        return f"<span class='detail'>no findings recorded; results: {keys or 'none'}</span>", 0
    was = changes((previous or {}).get(RESULTS_KEY), fs)
    items = []
    for f in as_findings(fs):
        cls = " class='changed'" if f.question in was else ""
        old = (f" <span class='was'>changed, was: {html.escape(was[f.question])}</span>"
               if f.question in was else "")
        items.append(f"<li{cls}>{badge(f.status)} <b>{html.escape(f.question)}</b>: {html.escape(f.verdict)}{old}"
                     + (f"<br><span class='detail'>{html.escape(f.detail)}</span>" if f.detail else "") + "</li>")
    return f"<ul class='f'>{''.join(items)}</ul>", len(was)


def render_index(root: Path) -> str:
    """The index page's HTML for the runs under ``root``."""
    runs = load_runs(root)
    q = html.escape
    previous: dict[int, dict[str, Any] | None] = {}
    for i, (_, info, _) in enumerate(runs):  # the next older run of the same report
        name = info.get("name")
        previous[i] = next((r[2] for r in runs[i + 1:] if r[1].get("name") == name), None)
    rows = []
    for i, (d, info, res) in enumerate(runs):
        links = " | ".join(
            f'<a href="{q(d)}/{q(info[key])}">{label}</a>'
            for key, label in (("html", "report"), ("executed", "notebook"), ("results", "results.json"))
            if info.get(key))
        body, n_changed = _findings_html(res, previous[i])
        flag = f"<br><span class='flag'>{n_changed} verdict(s) changed</span>" if n_changed else ""
        params = q(_summ(info.get("parameters", {}), 120))
        rows.append(
            f"<tr><td><b>{q(info.get('name', d))}</b><br>{q(info.get('date', ''))}{flag}</td><td>{body}</td>"
            f"<td>{links}<br>{q(str(info.get('seconds', '')))} s<br><code>{params}</code><br>"
            f"commit {q(str(info.get('git_commit') or '?'))}</td></tr>")
    failed = sorted(p.name for p in root.glob(".failed-*"))
    fail_html = ("<p style='color:#b00'>Failed runs (partial output kept, hidden): " +
                 ", ".join(q(f) for f in failed) + "</p>") if failed else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mxfp4lab reports</title>
<style>{_CSS}</style></head>
<body><h1>mxfp4lab reports</h1>
<p>Generated {q(_dt.datetime.now().isoformat(timespec='seconds'))} by <code>mxfp4lab report</code>. Each run lists
what it found; a verdict that differs from the previous run of the same report is highlighted.</p>
{fail_html}
<table><tr><th>report</th><th>findings</th><th>files, time, parameters</th></tr>
{''.join(rows) or '<tr><td colspan=3>no runs yet</td></tr>'}
</table></body></html>
"""


def write_index(root: Path) -> Path:
    """(Re)write ``<root>/index.html`` atomically (a reader never sees half a page)."""
    path = Path(root) / "index.html"
    tmp = path.with_name(f".index.html.{os.getpid()}.part")
    tmp.write_text(render_index(Path(root)), encoding="utf-8")
    tmp.replace(path)
    return path
