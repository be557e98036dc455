"""The studies on a user's own checkpoint (GPT-OSS or DeepSeek-V4 directory), one layer at a time.

* :func:`open_layer_source` -- detect the model (:func:`mxfp4lab.checkpoints.detect.detect_checkpoint`) and
  open the checkpoint lazily (memory-mapped safetensors; nothing is read yet).
* :func:`layer_stats` -- per layer, expert by expert: E8M0 scale histogram, FP4 code histogram, zero and
  max-magnitude (|x| = 6) fractions, per-expert Frobenius norms of the dequantized weights.
* :func:`layer_tokens` / :func:`route_tokens` -- activations (a distribution, or a ``.safetensors`` file of
  captured hidden states) and the layer's real router: GPT-OSS softmax over the top-k logits (+ router bias);
  DeepSeek-V4 sqrt(softplus) scores, top-k of scores + the noaux correction bias, weights the selected
  unbiased scores normalized (``routed_scaling_factor`` is applied after the experts, by the reference and
  every backend, as the model does), hash layers through ``tid2eid`` of the token ids.
* :func:`layer_backends` -- every available backend against the fp32 reference on the layer's real experts.
* :func:`routing_load` -- expert load of the real routing beside uniform and skewed synthetic routing.
* :func:`checkpoint_element` -- one element's code, scale and value, and its bits found in the SM90 layout.

Memory stays bounded at real size: statistics read one expert at a time; the backends run on token chunks
whose routed experts number at most ``max_experts`` (tokens are independent: chunking changes only how a
CPU GEMM blocks its rows, i.e. fp32 summation order), each chunk reading only its experts. On a GPT-OSS-120b layer (128 experts, 1.6 GB of MXFP4 weights)
the peak stays a few GB (measured: docs and the README). The GPU is used only by backends that need it
(``gpu_only``: FlashInfer, Marlin, Triton) when one is present; statistics, references and the emulation run
on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open

from ..backends import BackendSpec, get_backend, list_backends
from ..checkpoints import open_checkpoint, read_dsv4_layer, read_gpt_oss_layer
from ..checkpoints.detect import DetectedCheckpoint, detect_checkpoint
from ..formats import E2M1_VALUES, decode_e8m0, dequantize_mxfp4
from ..models import FORMAT_GPT_OSS, MoEConfig
from ..prepare import prepare_from_experts, trace_fc1_row
from ..reference import expert_weights_from_logical, moe_reference, relative_error, route
from ..synthetic import make_inputs

#: FP4 codes of +-0 and of the largest magnitude (+-6)
ZERO_CODES, MAX_CODES = (0, 8), (7, 15)
#: Pre-MoE RMSNorm weights, if the checkpoint holds them (the "gaussian" activations are scaled by them).
NORM_NAMES = {FORMAT_GPT_OSS: "model.layers.{layer}.post_attention_layernorm.weight",
              "dsv4": "layers.{layer}.ffn_norm.weight"}
ACTIVATIONS = ("gaussian", "heavy_tailed")
DEFAULT_MAX_EXPERTS = 16  # experts held dequantized at once (fp32: 100 MB each at GPT-OSS size)


@dataclasses.dataclass
class LayerSource:
    """A detected checkpoint, opened lazily: ``detected`` (model, format, layers), ``ckpt`` (reader)."""

    detected: DetectedCheckpoint
    ckpt: Any

    @property
    def config(self) -> MoEConfig:
        return self.detected.config

    def read(self, layer: int, experts=None):
        """Checkpoint-layout experts of ``layer`` (only ``experts`` when given; the router always)."""
        reader = read_gpt_oss_layer if self.config.checkpoint_format == FORMAT_GPT_OSS else read_dsv4_layer
        return reader(self.ckpt, layer, self.config, experts=experts)

    def check_layers(self, layers) -> list[int]:
        """``layers`` (None: the first MoE layer) checked against the layers the checkpoint holds."""
        held = list(self.detected.layers)
        want = [held[0]] if layers is None else [int(x) for x in ([layers] if isinstance(layers, int) else layers)]
        bad = [x for x in want if x not in held]
        if bad:
            raise ValueError(f"layers {bad} are not MoE layers of {self.detected.path} (it holds {held[0]}..{held[-1]}, "
                             f"{len(held)} layers)")
        return want


def open_layer_source(path) -> LayerSource:
    """Detect and open the checkpoint at ``path`` (a directory, an index.json or one .safetensors)."""
    det = detect_checkpoint(path)
    return LayerSource(det, open_checkpoint(path))


# ---------------------------------------------------------------- per-layer statistics
def _projections(part, config: MoEConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{gate, up, down}`` -> (packed uint8 [rows, K/2], scales uint8 [rows, K/32]) of a one-expert part."""
    if config.checkpoint_format == FORMAT_GPT_OSS:
        g = part.split_gate_up()
        return {"gate": (g["w_gate"][0], g["w_gate_scales"][0]), "up": (g["w_up"][0], g["w_up_scales"][0]),
                "down": (part.down_packed[0], part.down_scales[0])}
    return {"gate": (part.w1[0], part.w1_scale[0]), "up": (part.w3[0], part.w3_scale[0]),
            "down": (part.w2[0], part.w2_scale[0])}


def layer_stats(src: LayerSource, layer: int, experts=None) -> dict[str, Any]:
    """Statistics of one layer's MXFP4 weights, read expert by expert (bounded memory).

    Returns ``scale_hist`` (DataFrame: proj, byte 0..255, count), ``code_hist`` (proj, code 0..15, value,
    count), ``norms`` (expert, proj, norm: Frobenius norm of the dequantized matrix), and per projection
    ``summary`` (DataFrame: proj, elements, zero_frac, max_mag_frac, scale_exp_min / median / max).
    """
    cfg = src.config
    ids = list(range(cfg.num_experts)) if experts is None else list(experts)
    scale_counts = {p: torch.zeros(256, dtype=torch.int64) for p in ("gate", "up", "down")}
    code_counts = {p: torch.zeros(16, dtype=torch.int64) for p in ("gate", "up", "down")}
    norms = []
    for e in ids:
        part = src.read(layer, experts=[e])
        for proj, (w, s) in _projections(part, cfg).items():
            scale_counts[proj] += torch.bincount(s.reshape(-1).long(), minlength=256)
            b = w.reshape(-1)
            code_counts[proj] += torch.bincount((b & 0xF).long(), minlength=16) + torch.bincount((b >> 4).long(),
                                                                                               minlength=16)
            norms.append({"expert": e, "proj": proj, "norm": dequantize_mxfp4(w, s, torch.float32).norm().item()})
        del part
    rows = []
    for proj in ("gate", "up", "down"):
        cc, sc = code_counts[proj], scale_counts[proj]
        n = int(cc.sum())
        used = sc.nonzero().flatten()
        cum = sc.cumsum(0)
        median = int((cum >= cum[-1] / 2).nonzero()[0])
        rows.append({"proj": proj, "elements": n, "zero_frac": float(cc[list(ZERO_CODES)].sum()) / n,
                         "max_mag_frac": float(cc[list(MAX_CODES)].sum()) / n,
                         "scale_exp_min": int(used.min()) - 127, "scale_exp_median": median - 127,
                         "scale_exp_max": int(used.max()) - 127})
    values = list(E2M1_VALUES)
    return {
        "layer": layer,
        "summary": pd.DataFrame(rows),
        "scale_hist": pd.DataFrame([{"proj": p, "byte": b, "exp": b - 127, "count": int(c)} for p, h in scale_counts.items()
                                 for b, c in enumerate(h.tolist()) if c]),
        "code_hist": pd.DataFrame([{"proj": p, "code": c, "value": values[c], "count": int(n)} for p, h in code_counts.items()
                                for c, n in enumerate(h.tolist())]),
        "norms": pd.DataFrame(norms),
    }


# ---------------------------------------------------------------- activations and the real router
def _norm_weight(src: LayerSource, layer: int):
    name = NORM_NAMES[src.config.checkpoint_format].format(layer=layer)
    return src.ckpt.get(name).float() if name in src.ckpt else None


def layer_tokens(src: LayerSource, layer: int, m: int, activations: str = "gaussian", seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """``(x bf16 [m, H], token ids int64 [m] or None, description)`` for ``layer``.

    ``activations``: ``"gaussian"`` / ``"heavy_tailed"`` (unit-RMS tokens times the layer's pre-MoE RMSNorm
    weight when the checkpoint holds it), or a ``.safetensors`` file of captured hidden states: tensor
    ``layers.{layer}`` if present, else ``hidden_states``, else its only tensor, ``[M', H]`` (the first ``m``
    rows are used); optional ``token_ids`` ``[M']`` (needed for DeepSeek-V4 hash layers; random ids otherwise).
    """
    h = src.config.hidden_size
    if activations in ACTIVATIONS:
        g = torch.Generator().manual_seed(seed + 1000 * layer)
        x = torch.randn(m, h, generator=g)
        if activations == "heavy_tailed":
            x = x / torch.randn(m, 1, generator=g).abs().clamp_min(0.1)  # a Cauchy-like spread of token scales
        x = x / x.square().mean(-1, keepdim=True).sqrt()
        w = _norm_weight(src, layer)
        desc = f"{activations} tokens, unit RMS" + (" x the layer's RMSNorm weight" if w is not None else "")
        return (x * w if w is not None else x).bfloat16(), None, desc
    p = Path(activations)
    if not p.is_file():
        raise ValueError(f"activations must be one of {ACTIVATIONS} or a .safetensors file; {activations!r} is neither")
    with safe_open(str(p), framework="pt") as f:
        keys = list(f.keys())
        pick = next((k for k in (f"layers.{layer}", "hidden_states") if k in keys), None)
        if pick is None:
            data = [k for k in keys if k != "token_ids"]
            if len(data) != 1:
                raise ValueError(f"{p}: no tensor 'layers.{layer}' or 'hidden_states', and not exactly one other "
                                 f"tensor (found {keys})")
            pick = data[0]
        x = f.get_tensor(pick)
        tid = f.get_tensor("token_ids")[:m].long() if "token_ids" in keys else None
    if x.dim() != 2 or x.shape[1] != h:
        raise ValueError(f"{p}: tensor {pick!r} must be [M, H={h}], got {list(x.shape)}")
    if x.shape[0] < m:
        raise ValueError(f"{p}: tensor {pick!r} holds {x.shape[0]} tokens, {m} asked for")
    return x[:m].bfloat16(), tid, f"{m} captured hidden states ({p.name}:{pick})"


def route_tokens(src: LayerSource, layer: int, x: torch.Tensor, token_ids=None, seed: int = 0, router=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's real router on ``x``: ``(topk_ids int32 [M, k], topk_weights fp32 [M, k])`` (module
    docstring). ``router``: the Experts object already read (its router tensors), else read here."""
    cfg = src.config
    r = router if router is not None else src.read(layer, experts=[0])
    xf = x.float()
    if cfg.checkpoint_format == FORMAT_GPT_OSS:
        logits = xf @ r.router_weight.float().T + r.router_bias.float()
        return route(logits, cfg)
    logits = xf @ r.gate_weight.float().T
    if r.tid2eid is None:  # score layer: noaux_tc selection with the correction bias
        return route(logits, cfg, correction_bias=r.gate_bias)
    if token_ids is None:  # hash layer without captured token ids: random ids
        token_ids = torch.randint(0, r.tid2eid.shape[0], (x.shape[0],), generator=torch.Generator().manual_seed(seed))
    ids = r.tid2eid[token_ids.long()].long()
    s = torch.sqrt(torch.nn.functional.softplus(logits)).gather(-1, ids)
    return ids.to(torch.int32), (s / s.sum(-1, keepdim=True)).float()


# ---------------------------------------------------------------- backends against the fp32 reference
def available_backends() -> list[str]:
    """Backends that run here (``list_backends``), ``emulated_sm90`` first."""
    ok = [n for n, (good, _) in list_backends().items() if good]
    return sorted(ok, key=lambda n: (n != "emulated_sm90", n))


def _chunks(ids: torch.Tensor, max_experts: int) -> list[list[int]]:
    """Token chunks (in order) whose routed experts number at most ``max_experts``."""
    out, cur, seen = [], [], set()
    for t, row in enumerate(ids.tolist()):
        new = seen | set(row)
        if cur and len(new) > max_experts:
            out.append(cur)
            cur, new = [], set(row)
        cur.append(t)
        seen = new
    if cur:
        out.append(cur)
    return out


def _local(part, cfg: MoEConfig, n: int):
    """A part holding ``n`` experts as a layer of its own (local expert ids 0..n-1)."""
    return dataclasses.replace(part, experts=tuple(range(n))), dataclasses.replace(cfg, num_experts=n,
                                                                                  top_k=min(cfg.top_k, n))


def layer_backends(src: LayerSource, layer: int, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, *,
                   backends=None, max_experts: int = DEFAULT_MAX_EXPERTS) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each backend's output on the layer's real experts against the fp32 reference and the kernel-faithful
    reference (``moe_reference`` mode ``"kernel"``), with the real routing ``(ids, w)``.

    Runs token chunk by token chunk (:func:`_chunks`): each chunk reads only its routed experts, prepares
    them as a layer of their own (ids remapped), and runs every backend on it. Returns ``(frame, info)``:
    frame rows ``layer, path, reference, rel_err, max_abs_err, bit_exact``; info ``chunks``,
    ``experts_routed``, ``backends``, ``skipped`` (backend -> why).
    """
    cfg = src.config
    names = available_backends() if backends is None else list(backends)
    specs = [BackendSpec.of(b) for b in names]
    m, h = x.shape
    outs = {k: torch.zeros(m, h) for k in ["fp32", "kernel"] + [s.label for s in specs]}
    skipped: dict[str, str] = {}
    chunks = _chunks(ids, max(max_experts, cfg.top_k))
    for toks in chunks:
        sub = sorted({e for t in toks for e in ids[t].tolist()})
        part, lcfg = _local(src.read(layer, experts=sub), cfg, len(sub))
        moe = prepare_from_experts(part, config=lcfg)
        remap = {e: j for j, e in enumerate(sub)}
        tid = torch.tensor(toks)
        lids = torch.tensor([[remap[e] for e in row] for row in ids[tid].tolist()], dtype=torch.int32)
        xc, wc = x[tid], w[tid]
        ew = expert_weights_from_logical(moe)
        kw = dict(lcfg.swiglu_kwargs, routed_scaling_factor=cfg.routed_scaling_factor)
        outs["fp32"][tid] = moe_reference(xc, lids, wc, ew, mode="fp32", **kw).float()
        outs["kernel"][tid] = moe_reference(xc, lids, wc, ew, mode="kernel", **kw).float()
        del ew
        run_cfg = dataclasses.replace(lcfg, routed_scaling_factor=cfg.routed_scaling_factor)
        for spec in specs:
            if spec.label in skipped:
                continue
            try:
                dev = "cuda" if get_backend(spec.name).gpu_only else "cpu"
                be = spec.make(moe.to(dev), run_cfg)
                outs[spec.label][tid] = be(xc.to(dev), lids.to(dev), wc.to(dev)).float().cpu()
                del be
            except Exception as exc:  # noqa: BLE001 - one backend failing must not hide the others
                skipped[spec.label] = f"{type(exc).__name__}: {str(exc)[:200]}"
        del moe, part
    rows = []
    for path, y in outs.items():
        if path == "fp32" or path in skipped:
            continue
        for ref in ("fp32", "kernel"):
            if path == "kernel" and ref == "kernel":
                continue
            r = outs[ref]
            rows.append({"layer": layer, "path": "kernel-faithful reference" if path == "kernel" else path,
                             "reference": f"{ref} reference" if ref == "fp32" else "kernel-faithful reference",
                             "rel_err": relative_error(y, r), "max_abs_err": (y - r).abs().max().item(),
                             "bit_exact": bool(torch.equal(y, r))})
    info = {"chunks": len(chunks), "experts_routed": int(torch.unique(ids).numel()), "backends": [s.label for s in specs],
                "skipped": skipped, "tokens": m}
    return pd.DataFrame(rows), info


# ---------------------------------------------------------------- routing statistics (latency)
def routing_load(config: MoEConfig, ids: torch.Tensor, *, seed: int = 0, label: str = "real router"
                 ) -> pd.DataFrame:
    """Expert load (tokens per expert, sorted high to low) of ``ids`` beside synthetic uniform and skewed
    routing of as many tokens (:func:`mxfp4lab.synthetic.make_inputs`). Columns: ``routing, rank, tokens``;
    ``.attrs["summary"]``: per routing ``active_experts, max_load, mean_load, max_over_mean, top8_share``."""
    m = ids.shape[0]
    sets = {label: ids}
    for r in ("uniform", "skewed"):
        sets[r] = synthetic_routing(config, m, r, seed)[1]
    rows, summ = [], []
    for name, t in sets.items():
        counts = torch.bincount(t.reshape(-1).long(), minlength=config.num_experts).sort(descending=True).values
        rows += [{"routing": name, "rank": i, "tokens": int(c)} for i, c in enumerate(counts.tolist())]
        act = counts[counts > 0]
        summ.append({"routing": name, "tokens": m, "active_experts": int(act.numel()), "max_load": int(counts[0]),
                         "mean_load": float(act.float().mean()), "max_over_mean": float(counts[0] / act.float().mean()),
                         "top8_share": float(counts[:8].sum() / counts.sum())})
    df = pd.DataFrame(rows)
    df.attrs["summary"] = pd.DataFrame(summ)
    return df


def synthetic_routing(config: MoEConfig, m: int, routing: str, seed: int = 0):
    """``(x, topk_ids, topk_weights)`` of ``m`` tokens with synthetic ``routing`` (uniform / skewed)."""
    return make_inputs(config, m, 1, routing, device="cpu", seed=seed)[0]


# ---------------------------------------------------------------- one element (layout)
def checkpoint_element(src: LayerSource, layer: int, expert: int, ckpt_row: int, k: int) -> dict[str, Any]:
    """One FP4 element of a real expert: its code, scale and value in the checkpoint, and where its four code
    bits are in the SM90 layout of that expert (read back from the interleaved tensor: ``bits_match``).

    ``ckpt_row``: GPT-OSS ``gate_up_proj`` row (2j = gate_j, 2j+1 = up_j); DeepSeek-V4 rows 0..I-1 are ``w1``
    (gate) row j, rows I..2I-1 are ``w3`` (up) row j - I.
    """
    from ..layout.sm90_moe import to_sm90
    from .layout import layout_trace

    cfg = src.config
    part = src.read(layer, experts=[expert])
    if cfg.checkpoint_format == FORMAT_GPT_OSS:
        packed, scales = part.gate_up_packed[0], part.gate_up_scales[0]
        row, fmt, name = ckpt_row, None, f"model.layers.{layer}.mlp.experts.gate_up_proj_blocks[{expert}]"
    else:
        i = cfg.intermediate_size
        t, row = ("w1", ckpt_row) if ckpt_row < i else ("w3", ckpt_row - i)
        packed, scales = getattr(part, t)[0], getattr(part, t + "_scale")[0]
        fmt, name = t, f"layers.{layer}.ffn.experts.{expert}.{t}.weight"
    if not (0 <= row < packed.shape[0] and 0 <= k < 2 * packed.shape[1]):
        raise ValueError(f"element (row {ckpt_row}, k {k}) is outside {name} [{packed.shape[0]}, {2 * packed.shape[1]}]")
    code = int((packed[row, k // 2] >> (4 * (k % 2))) & 0xF)
    sbyte = int(scales[row, k // 32])
    value = float(E2M1_VALUES[code]) * float(decode_e8m0(torch.tensor([sbyte], dtype=torch.uint8))[0])
    w13_row = trace_fc1_row(row, cfg, fmt)["w13_row"]
    local, lcfg = _local(part, cfg, 1)
    sm90 = to_sm90(prepare_from_experts(local, config=lcfg))
    tr = layout_trace(w13_row, k, expert=0, config=cfg)
    w = sm90.w13[0]
    found = [int((w[tr["dst_row"], tr["dst_byte"][b]] >> tr["dst_bit"][b]) & 1) for b in range(4)]
    return {"layer": layer, "expert": expert, "ckpt_row": ckpt_row, "tensor": name, "k": k, "code": code, "code_bits": [
        (code >> b) & 1 for b in range(4)], "scale_byte": sbyte, "scale_exp": sbyte - 127, "value": value, "w13_row": w13_row,
        "dst_row": tr["dst_row"], "dst_byte": tr["dst_byte"], "dst_bit": tr["dst_bit"], "found_bits": found,
        "bits_match": found == [(code >> b) & 1 for b in range(4)]}


# ---------------------------------------------------------------- what the notebooks record
def checkpoint_record(src: LayerSource, layers) -> dict[str, Any]:
    """The ``checkpoint`` entry of results.json: path, model, format, layers studied, where each value came from."""
    d = src.detected
    return {"path": str(d.path), "model": d.config.name, "format": d.checkpoint_format, "layers": list(layers),
                "layers_held": len(d.layers), "sources": d.sources}


def stats_record(stats: dict[str, Any]) -> dict[str, Any]:
    """:func:`layer_stats` as JSON: per projection its summary row, plus the range of the expert norms."""
    out = {r["proj"]: {k: v for k, v in r.items() if k != "proj"} for r in stats["summary"].to_dict("records")}
    out.update(norm_min=float(stats["norms"]["norm"].min()), norm_max=float(stats["norms"]["norm"].max()))
    return out


def element_text(src: LayerSource, layer: int, expert: int, ckpt_row: int, k: int) -> str:
    """One line for the layout explorer: the element's code, scale and value in the checkpoint, and whether
    its bits sit where the trace says in that expert's SM90 layout."""
    e = checkpoint_element(src, layer, expert, ckpt_row, k)
    return (f"in the checkpoint ({e['tensor']}, layer {layer}): code {e['code']:#06b} x 2^{e['scale_exp']} = "
            f"{e['value']:g}; its 4 bits found at the traced SM90 positions: {'yes' if e['bits_match'] else 'NO'}")
