"""ipywidgets explorers for teaching the SM90 layouts (used by notebooks/01_layout_explorer).

:class:`LayoutExplorer` -- pick expert / row / k and see that element's path highlighted through the
stages (optional pre-stage: checkpoint row -> ``[up ; gate]`` stacking + padding; then the 16x64 tile
interleave, the 32-bit word bit permutation, and the 64x128 scale fold), plus the reverse lookup from
a physical (row, byte, bit). All logic is in :mod:`mxfp4lab.studies.layout` (``layout_trace``,
``layout_reverse``); drawing is :func:`mxfp4lab.studies.layout_figures.plot_element_path`. The callbacks are plain
Python, so tests drive them by setting widget values and reading :attr:`LayoutExplorer.highlight`.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Dict, Optional, Union

import ipywidgets as W

from .models import get_model
from .studies import layout as study
from .studies import layout_figures

_NO_MODEL_ROWS, _NO_MODEL_K = 128, 256  # ranges when no model is given (fc1 rows, K)
SLIDER_PX = 520  # slider width: at most one value per pixel (a coarse tile slider plus a fine one)
#: Shown in the static snapshot (HTML reports, a notebook opened without its kernel).
SNAPSHOT_NOTE = ("Static snapshot of the layout explorer. The live explorer runs in JupyterLab: run the notebook "
                 "(Run > Run All Cells); a notebook reopened without running shows 'Error displaying widget: "
                 "model not found' until it runs again.")


class TiledControl:
    """One integer control as three widgets: an exact entry (``value_w``, the value of record), a coarse
    slider over tiles of ``tile`` values and a fine slider inside the tile, kept in step. A slider never
    has more steps than pixels (``SLIDER_PX``), so dragging reaches every value."""

    def __init__(self, description: str, value: int, n: int, tile: int, style, tile_name: str):
        self.n, self.tile = n, tile
        lay = W.Layout(width=f"{SLIDER_PX}px")
        self.value_w = W.BoundedIntText(value=value, min=0, max=n - 1, description=description, style=style)
        self.coarse_w = W.IntSlider(value=value // tile, min=0, max=(n - 1) // tile, description=tile_name,
                                    style=style, layout=lay, continuous_update=False)
        self.fine_w = W.IntSlider(value=value % tile, min=0, max=tile - 1, description="in tile", style=style,
                                  layout=lay, continuous_update=False)
        self._syncing = False
        self.value_w.observe(self._from_value, names="value")
        self.coarse_w.observe(self._from_sliders, names="value")
        self.fine_w.observe(self._from_sliders, names="value")
        self.box = W.VBox([self.value_w, self.coarse_w, self.fine_w])

    def _from_value(self, change) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.coarse_w.value, self.fine_w.value = divmod(int(change["new"]), self.tile)
        finally:
            self._syncing = False

    def _from_sliders(self, _change) -> None:
        if self._syncing:
            return
        v = min(self.coarse_w.value * self.tile + self.fine_w.value, self.n - 1)
        self._syncing = True
        try:
            self.fine_w.value = v % self.tile  # clamped at the last, partial tile
        finally:
            self._syncing = False
        self.value_w.value = v  # observers of value_w (the explorer) run here

    def steps_per_pixel(self) -> float:
        return max(self.coarse_w.max - self.coarse_w.min, self.fine_w.max - self.fine_w.min) / SLIDER_PX


def _resolve_model(model):
    return None if model is None else get_model(model)


class LayoutExplorer:
    """Interactive path tracer for one MXFP4 element of an fc1 (``w13``) weight.

    Args:
        model: model name or :class:`~mxfp4lab.models.MoEConfig` (sets the ranges and flat byte
            offsets); ``None``: a small generic 128 x 256 matrix, no pre-stage.
        expert, row, k: initial selection. ``row`` is a checkpoint row when a pre-stage is active,
            else an fc1 row.
        pre_stage: ``None`` (interleave + fold only), ``"auto"`` (:func:`mxfp4lab.prepare.trace_fc1_row`)
            or a callable, see :data:`mxfp4lab.studies.layout.PreStage`.
        draw: render the figure on every change (turn off in tests / headless use).
        element_info: optional ``(expert, row, k) -> str`` shown under the trace, e.g. the element's code and
            value in a real checkpoint (:func:`mxfp4lab.studies.checkpoint.element_text`).

    Attributes (updated by every callback): ``trace`` (``layout_trace`` dict), ``highlight`` (what the
    figure marks: ``src`` (row, k), ``src_tile`` (row % 16, k % 64), ``dst`` list of 4
    (dst_row, dst_byte, dst_bit) for code bits m0 e0 e1 s, ``scale`` (row, group), ``scale_fold``
    (block, k128, frow, col)), ``reverse`` (``layout_reverse`` of the physical-bit inputs), ``error``.
    """

    def __init__(self, model: Union[None, str, Any] = "gpt-oss-20b", expert: int = 0, row: int = 0, k: int = 0,
                 pre_stage=None, draw: bool = True, element_info=None):
        self.config = _resolve_model(model)
        self.pre_stage = study.resolve_pre_stage(pre_stage) if self.config is not None else None
        self.draw = draw
        self.element_info = element_info  # (expert, row, k) -> one line of text about the real element
        self.info = ""
        self.trace: Dict[str, Any] = {}
        self.highlight: Dict[str, Any] = {}
        self.reverse: Dict[str, Any] = {}
        self.error: Optional[str] = None
        self._fig = None

        if self.config is None:
            n_exp, n_rows, n_k = 1, _NO_MODEL_ROWS, _NO_MODEL_K
        else:
            n_exp, n_k = self.config.num_experts, self.config.padded_hidden
            n_rows = 2 * (self.config.intermediate_size if self.pre_stage else self.config.padded_intermediate)
        self.n_rows, self.n_k = n_rows, n_k
        row_desc = "ckpt row" if self.pre_stage else "fc1 row"
        style = {"description_width": "70px"}
        self.expert_w = W.BoundedIntText(value=expert, min=0, max=n_exp - 1, description="expert", style=style)
        self.row_ctl = TiledControl(row_desc, row, n_rows, 16, style, "16-row tile")
        self.k_ctl = TiledControl("k", k, n_k, 64, style, "64-k tile")
        self.row_w, self.k_w = self.row_ctl.value_w, self.k_ctl.value_w
        kb = n_k // 2
        self.dst_row_w = W.BoundedIntText(value=0, min=0, max=(2 * (self.config.padded_intermediate)
                                                                if self.config else n_rows) - 1,
                                          description="dst row", style=style)
        self.dst_byte_w = W.BoundedIntText(value=0, min=0, max=kb - 1, description="dst byte", style=style)
        self.dst_bit_w = W.BoundedIntText(value=0, min=0, max=7, description="dst bit", style=style)
        self.jump_w = W.Button(description="trace this element", tooltip="select the reverse lookup's element")
        self.text = W.HTML()
        self.reverse_text = W.HTML()
        self.jump_error: Optional[str] = None
        self.renders = 0  # figures drawn (tests and the JupyterLab test read it)
        self.out = W.Output()

        for w in (self.expert_w, self.row_w, self.k_w):
            w.observe(self._on_forward, names="value")
        for w in (self.dst_row_w, self.dst_byte_w, self.dst_bit_w):
            w.observe(self._on_reverse, names="value")
        self.jump_w.on_click(self._on_jump)

        self.widget = W.VBox([
            W.HTML("<b>Forward: pick an element</b>"),
            W.HBox([self.expert_w]), self.row_ctl.box, self.k_ctl.box, self.text,
            W.HTML("<b>Reverse: pick a physical bit of the SM90 weight</b>"),
            W.HBox([self.dst_row_w, self.dst_byte_w, self.dst_bit_w]), W.HBox([self.jump_w]), self.reverse_text,
            self.out,
        ])
        self.update()

    # ------------------------------------------------------------------ callbacks
    def _on_forward(self, _change=None) -> None:
        self.update()

    def _on_reverse(self, _change=None) -> None:
        self.jump_error = None
        self.update_reverse()
        self._render()

    def _on_jump(self, _button=None) -> None:
        """Select the reverse lookup's element in the forward controls. A physical bit that holds zero
        padding (no checkpoint row maps there) is reported beside the lookup; the selected element, its
        trace and the figure stay as they were."""
        if not self.reverse:
            return
        fc1_row = self.reverse["row"]
        row = self._fc1_to_control_row(fc1_row)
        if row is None:
            self.jump_error = self._padding_note(fc1_row)
            self.update_reverse()
            return
        self.jump_error = None
        with self.row_w.hold_trait_notifications(), self.k_w.hold_trait_notifications():
            self.k_w.value = self.reverse["k"]
            self.row_w.value = row
        self.update()

    def _padding_note(self, fc1_row: int) -> str:
        if self.config is not None:
            i, ip = self.config.intermediate_size, self.config.padded_intermediate
            half, j = ("up", fc1_row) if fc1_row < ip else ("gate", fc1_row - ip)
            if j >= i:
                return (f"fc1 row {fc1_row} is zero padding ({half} half, rows {i}..{ip - 1} pad I={i} to "
                        f"I_pad={ip}): no checkpoint row maps there")
        return f"fc1 row {fc1_row} maps to no checkpoint row"

    def _fc1_to_control_row(self, fc1_row: int) -> Optional[int]:
        if not self.pre_stage:
            return fc1_row
        for cand in range(self.n_rows):  # invert the pre-stage by search (at most 2I calls, cheap)
            try:
                if study.normalize_stage(self.pre_stage(cand, self.config))["w13_row"] == fc1_row:
                    return cand
            except Exception:
                return None
        return None

    # ------------------------------------------------------------------ state
    def update(self) -> None:
        """Recompute the trace for the current (expert, row, k), refresh text and figure."""
        try:
            self.trace = study.layout_trace(self.row_w.value, self.k_w.value, expert=self.expert_w.value,
                                         config=self.config, pre_stage=self.pre_stage)
            self.error = None
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.text.value = f"<span style='color:#b00'>{html.escape(self.error)}</span>"
            return
        tr = self.trace
        self.highlight = dict(
            src=(tr["row"], tr["k"]),
            src_tile=(tr["row"] % 16, tr["k"] % 64),
            dst=[(tr["dst_row"], tr["dst_byte"][b], tr["dst_bit"][b]) for b in range(4)],
            scale=(tr["scale"]["row"], tr["scale"]["group"]),
            scale_fold=tuple(tr["scale_fold"][key] for key in ("block", "k128", "frow", "col")),
        )
        if self.element_info is not None:
            try:
                self.info = str(self.element_info(self.expert_w.value, self.row_w.value, self.k_w.value))
            except Exception as e:  # noqa: BLE001 - shown beside the trace, the trace stays
                self.info = f"(no checkpoint value: {type(e).__name__}: {e})"
        self.text.value = self.describe_html()
        self.update_reverse()
        self._render()

    def update_reverse(self) -> None:
        """Recompute the reverse lookup from the physical-bit inputs."""
        q = dict(dst_row=self.dst_row_w.value, dst_byte=self.dst_byte_w.value, dst_bit=self.dst_bit_w.value)
        self.reverse = dict(study.layout_reverse(**q), **q)
        r = self.reverse
        hit = ""
        if self.highlight and any(d == (r["dst_row"], r["dst_byte"], r["dst_bit"]) for d in self.highlight["dst"]):
            hit = " &mdash; <b>this is a bit of the selected element</b>"
        note = (f"<br><span style='color:#b00'>{html.escape(self.jump_error)}</span>" if self.jump_error else "")
        self.reverse_text.value = (
            f"w_sm90[e, {r['dst_row']}, {r['dst_byte']}] bit {r['dst_bit']} holds code bit "
            f"<b>{r['code_bit_name']}</b> of logical element (fc1 row <b>{r['row']}</b>, k <b>{r['k']}</b>) = "
            f"byte {r['src_byte']}, {'high' if r['nibble'] else 'low'} nibble{hit}{note}"
        )

    def describe(self) -> str:
        """Plain-text path of the current element (one line per stage)."""
        if self.error:
            return self.error
        return "\n".join(f"{s:<22} {w:<44} {n}" for s, w, n in self.trace["stages"])

    def describe_html(self) -> str:
        rows = "".join(
            f"<tr><td><b>{html.escape(s)}</b></td><td><code>{html.escape(w)}</code></td>"
            f"<td>{html.escape(n)}</td></tr>" for s, w, n in self.trace["stages"]
        )
        off = self.trace.get("offsets")
        extra = ""
        if off:
            extra = (f"<div>flat byte offsets: weight {sorted(set(off['weight_byte']))}, "
                     f"folded scale {off['folded_scale_byte']}</div>")
        info = f"<div><b>{html.escape(self.info)}</b></div>" if self.info else ""
        return f"<table style='font-size:90%'>{rows}</table>{extra}{info}"

    # ------------------------------------------------------------------ drawing
    def figure(self, fig=None):
        """A static figure of the current state (what the widget shows); safe in reports."""
        return layout_figures.plot_element_path(self.trace, reverse=self.reverse, fig=fig)

    def _render(self) -> None:
        if not self.draw or self.error:
            return
        from IPython.display import clear_output, display
        from matplotlib.figure import Figure

        with self.out:
            clear_output(wait=True)
            if self._fig is None:  # not a pyplot figure: the inline backend must not show it again
                self._fig = Figure(figsize=(14, 9))
            self.figure(self._fig)
            display(self._fig)
        self.renders += 1

    def snapshot_html(self) -> str:
        """The explorer's current state as static HTML: the trace table, the reverse lookup and the
        figure (an inline PNG), under a note on how to get the live explorer."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(14, 9))
        self.figure(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        img = base64.b64encode(buf.getvalue()).decode("ascii")
        state = (f"expert {self.expert_w.value}, {self.row_w.description} {self.row_w.value}, k {self.k_w.value}")
        body = (f"<span style='color:#b00'>{html.escape(self.error)}</span>" if self.error else self.describe_html())
        return (f"<div class='mxfp4lab-explorer-snapshot'><p style='font-size:90%;color:#555'>"
                f"{html.escape(SNAPSHOT_NOTE)}</p><p><b>Selected:</b> {html.escape(state)}</p>{body}"
                f"<p>{self.reverse_text.value}</p><img src='data:image/png;base64,{img}' "
                f"alt='layout explorer snapshot' style='max-width:100%'></div>")

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus a static HTML snapshot: what an HTML export shows (it drops the widget
        view, see :func:`mxfp4lab.report.static_widgets`)."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        data["text/html"] = self.snapshot_html()
        data["text/plain"] = "LayoutExplorer: " + SNAPSHOT_NOTE
        return data

    def select(self, *, expert: Optional[int] = None, row: Optional[int] = None, k: Optional[int] = None) -> Dict:
        """Set the forward controls (as a user would) and return the new :attr:`highlight`."""
        for w, v in ((self.expert_w, expert), (self.row_w, row), (self.k_w, k)):
            if v is not None:
                w.value = v
        return self.highlight

    def lookup(self, dst_row: int, dst_byte: int, dst_bit: int) -> Dict:
        """Set the reverse controls and return :attr:`reverse`."""
        self.dst_row_w.value, self.dst_byte_w.value, self.dst_bit_w.value = dst_row, dst_byte, dst_bit
        return self.reverse
