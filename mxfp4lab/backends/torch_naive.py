"""The plain PyTorch path a user would write: dequantize every expert to bf16 once, then per-expert
bf16 matmuls over the tokens routed to it (gather, GEMM1, clamped SwiGLU, GEMM2, weighted scatter-add).
The naive floor in the latency study; runs on CPU or GPU."""

from __future__ import annotations

import torch

from ..reference import expert_weights_from_logical, swiglu
from .base import MoEBackend


class TorchNaive(MoEBackend):
    name = "torch_naive"
    graph_capturable = False  # per-expert token counts go to the host (.tolist())

    def __init__(self, moe, config=None, *, device=None):
        super().__init__(moe, config)
        dev = device or moe.w13.device
        ew = expert_weights_from_logical(moe.to("cpu") if dev != "cpu" else moe, torch.bfloat16)
        # [E, 2I, H] with [gate ; up] rows: one GEMM1 per expert
        self.w13 = torch.cat((ew.w_gate, ew.w_up), dim=1).to(dev)
        self.w2 = ew.w_down.to(dev)
        self.b13 = None if ew.b_gate is None else torch.cat((ew.b_gate, ew.b_up), dim=1).to(dev)
        self.b2 = None if ew.b_down is None else ew.b_down.to(dev)
        self.inter = ew.w_gate.shape[1]
        self.offset = ew.expert_offset
        s = self.swiglu
        self.alpha = s["swiglu_alpha"] if not isinstance(s["swiglu_alpha"], torch.Tensor) else s["swiglu_alpha"].to(dev)
        self.beta = s["swiglu_beta"] if not isinstance(s["swiglu_beta"], torch.Tensor) else s["swiglu_beta"].to(dev)
        lim = s["swiglu_limit"]
        self.limit = lim.to(dev) if isinstance(lim, torch.Tensor) else lim

    @staticmethod
    def _p(v, e):
        return v[e] if isinstance(v, torch.Tensor) else v

    def forward(self, x, topk_ids, topk_weights):
        m, h = x.shape
        out = torch.zeros(m, h, dtype=torch.float32, device=x.device)
        n_exp = self.w13.shape[0]
        flat = topk_ids.reshape(-1).long() - self.offset
        order = torch.argsort(flat)
        ok = (flat >= 0) & (flat < n_exp)  # pairs routed to this shard's experts
        counts = torch.bincount(flat[ok], minlength=n_exp).tolist()
        valid = order[ok[order]]
        tok = valid // topk_ids.shape[1]
        wts = topk_weights.reshape(-1)[valid]
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            t = tok[start:start + n]
            h1 = x[t] @ self.w13[e].T
            if self.b13 is not None:
                h1 = h1 + self.b13[e]
            g, u = h1[:, : self.inter].float(), h1[:, self.inter:].float()
            a = swiglu(g, u, self._p(self.alpha, e), self._p(self.beta, e), self._p(self.limit, e)).to(torch.bfloat16)
            y = a @ self.w2[e].T
            if self.b2 is not None:
                y = y + self.b2[e]
            out.index_add_(0, t, y.float() * wts[start:start + n, None])
            start += n
        return out.to(torch.bfloat16)
