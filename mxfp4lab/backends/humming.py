"""Humming MXFP4 MoE (``humming-kernels`` 0.1.19, JIT-compiled): what vLLM is moving DeepSeek-V4 on SM90 to.

Humming is a GEMM library (``humming.layer.HummingMethod``); the MoE around it is the caller's. This backend
does what vLLM 0.26.0's ``HummingIndexedExperts`` does (``vllm/model_executor/layers/fused_moe/experts/
fused_humming_moe.py``; weights: ``vllm/model_executor/layers/quantization/utils/humming_utils.py``
``convert_to_humming_moe_kernel_format``), read from its source, not copied:

* weights, once per sublayer (``w13``, ``w2``): the checkpoint-schema tensors (:class:`HummingLayout`)
  go through the schema's ``convert_humming`` (``gpt_oss_mxfp4`` for GPT-OSS, ``mxfp4`` for
  DeepSeek-V4, as vLLM's mxfp4 oracle picks), then ``HummingMethod.prepare_layer_meta(pad_n_to_multiple=256,
  pad_k_to_multiple=128)`` and ``transform_humming_layer`` (Humming's own repack, on the GPU).
* forward (indexed GEMM): the (token, k) pairs are grouped by expert into blocks of the M-block size of
  the tuning entry Humming's heuristics pick for ``valid_shape_m = ceil(M * k * E_local / E)``
  (vLLM's ``prepare_humming_moe_kwargs``) -- with mxfp4lab's own graph-capturable alignment
  (:func:`mxfp4lab.kernels.triton_moe.align_pairs`, vLLM's ``moe_align_block_size`` layout: pair ids,
  padding = M*k); GEMM1 ``[M*k, 2I]`` bf16 (bias fused); clamped SwiGLU (one Triton kernel,
  :func:`mxfp4lab.backends.marlin.swiglu_packed`, where vLLM calls its ``swigluoai_and_mul`` /
  ``swiglu_limit_func`` ops); GEMM2 ``[M*k, H]`` bf16 (bias fused, top_k=1); the router-weighted sum over k
  in fp32 (mxfp4lab's combine kernel, as vLLM's ``moe_fused_mul_sum``).

Rounding points: GEMM1 output + bias -> bf16; SwiGLU in fp32 -> bf16; GEMM2 + bias -> bf16; fp32
weighted sum -> bf16 (``mode="kernel"``'s four, with the fc1 bias added before the first rounding).
DeepSeek-V4 is supported (Humming's plain ``mxfp4`` schema; vLLM PRs #52318 / #56997 move it there).

The GPU path needs ``humming`` importable (``scripts/gpu/stage-humming.sh`` stages the wheel) and nvcc
or NVRTC for its JIT (the first call of each kernel compiles it; cached under ``~/.cache``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from ..moe_tensors import LogicalMoE
from ..prepare import round_up
from .base import MoEBackend
from .marlin import swap_halves, swiglu_packed

#: vLLM's ``mxfp4_round_up_hidden_size_and_intermediate_size`` for the HUMMING backend: intermediate to 64
INTERMEDIATE_MULTIPLE = 64
#: ``_prepare_and_transform_sublayer``: Humming pads N and K itself to these
PAD_N, PAD_K = 256, 128
#: vLLM's default when no tuning entry covers the estimated M (``prepare_humming_moe_kwargs``)
DEFAULT_BLOCK_M = 64
#: Humming's GEMM kernel is the ``humming<...>`` template (``include/humming/kernel/humming.cuh``)
GEMM_KERNEL_PATTERN = r"humming"
SCHEMA = {"gpt_oss": "gpt_oss_mxfp4", "dsv4": "mxfp4"}


@dataclass
class HummingLayout:
    """The logical MoE as the checkpoint schemas ``gpt_oss_mxfp4`` / ``mxfp4`` declare it
    (``humming/schema/mxfp4.py``: weight uint8 ``[E, N, K/2]``, weight_scale uint8 ``[E, N, K/32]``,
    bias ``[E, N]``), per sublayer: ``w13`` ``[E, 2I, H/2]`` with halves ``[gate ; up]`` (the order
    :func:`~mxfp4lab.backends.marlin.swiglu_packed` reads), ``w2`` ``[E, H, I/2]``; biases bf16. H is the
    unpadded hidden size, I the intermediate rounded up to :data:`INTERMEDIATE_MULTIPLE`."""

    w13: torch.Tensor
    w13_scale: torch.Tensor
    w13_bias: torch.Tensor | None
    w2: torch.Tensor
    w2_scale: torch.Tensor
    w2_bias: torch.Tensor | None
    hidden_size: int
    intermediate_size: int
    num_experts_total: int
    expert_offset: int

    @property
    def num_local_experts(self) -> int:
        return self.w13.shape[0]

    def sublayers(self) -> dict:
        """``{"w13": (tensors, shape_n, shape_k), "w2": ...}`` with the schema's tensor names."""
        out = {}
        for sub, n, k in (("w13", 2 * self.intermediate_size, self.hidden_size),
                          ("w2", self.hidden_size, self.intermediate_size)):
            t = {"weight": getattr(self, sub), "weight_scale": getattr(self, f"{sub}_scale")}
            if getattr(self, f"{sub}_bias") is not None:
                t["bias"] = getattr(self, f"{sub}_bias")
            out[sub] = (t, n, k)
        return out


def humming_layout_from_logical(logical: LogicalMoE) -> HummingLayout:
    """Logical (``[up ; gate]``, H and I padded to 128) -> :class:`HummingLayout`: trim the zero padding to
    H and round_up(I, 64), swap the fc1 halves to ``[gate ; up]``. Exact inverse:
    :func:`logical_from_humming_layout`."""
    h, i_pad = logical.hidden_size, logical.padded_intermediate
    if h % 32:
        raise ValueError(f"Humming's MXFP4 schemas need hidden_size % 32 == 0, got {h}")
    i = round_up(logical.intermediate_size, INTERMEDIATE_MULTIPLE)

    def fc1(t, cols=None):  # [E, 2*I_pad, ...] [up ; gate] -> [E, 2i, cols] [gate ; up]
        t = torch.cat((t[:, :i], t[:, i_pad: i_pad + i]), dim=1)
        return swap_halves(t if cols is None else t[..., :cols])

    return HummingLayout(
        w13=fc1(logical.w13, h // 2), w13_scale=fc1(logical.w13_scale, h // 32),
        w13_bias=None if logical.w13_bias is None else fc1(logical.w13_bias),
        w2=logical.w2[:, :h, : i // 2].contiguous(), w2_scale=logical.w2_scale[:, :h, : i // 32].contiguous(),
        w2_bias=None if logical.w2_bias is None else logical.w2_bias[:, :h].contiguous(),
        hidden_size=h, intermediate_size=i,
        num_experts_total=logical.num_experts_total, expert_offset=logical.expert_offset,
    )


def logical_from_humming_layout(layout: HummingLayout, intermediate_size: int) -> dict:
    """Inverse of :func:`humming_layout_from_logical` (tests): the logical tensors re-padded with zeros to
    multiples of 128, as a dict of :class:`~mxfp4lab.moe_tensors.LogicalMoE` fields."""
    h, i = layout.hidden_size, layout.intermediate_size
    h_pad, i_pad = round_up(h), round_up(intermediate_size)
    pad = torch.nn.functional.pad

    def fc1(t, cols_pad=None):  # [E, 2i, c] [gate ; up] -> [E, 2*i_pad, cols_pad] [up ; gate]
        t = swap_halves(t)
        widths = (0, i_pad - i) if cols_pad is None else (0, cols_pad - t.shape[-1], 0, i_pad - i)
        return torch.cat((pad(t[:, :i], widths), pad(t[:, i:], widths)), dim=1)

    return {
        "w13": fc1(layout.w13, h_pad // 2), "w13_scale": fc1(layout.w13_scale, h_pad // 32),
        "w13_bias": None if layout.w13_bias is None else fc1(layout.w13_bias),
        "w2": pad(layout.w2, (0, (i_pad - i) // 2, 0, h_pad - h)),
        "w2_scale": pad(layout.w2_scale, (0, (i_pad - i) // 32, 0, h_pad - h)),
        "w2_bias": None if layout.w2_bias is None else pad(layout.w2_bias, (0, h_pad - h)),
    }


def check_schema(layout: HummingLayout, schema: str, dtype=torch.bfloat16) -> dict:
    """Each sublayer's tensors against Humming's checkpoint schema declaration (``validate_tensors``:
    names, shapes, dtypes). -> ``{sub: (schema object, tensors, shape_n, shape_k)}``."""
    from humming.schema import BaseWeightSchema

    out = {}
    for sub, (tensors, n, k) in layout.sublayers().items():
        ws = BaseWeightSchema.from_config({"quant_method": schema})
        ws.validate_tensors(tensors, n, k, dtype, num_experts=layout.num_local_experts, has_bias="bias" in tensors)
        out[sub] = (ws, tensors, n, k)
    return out


def convert_to_humming_schema(layout: HummingLayout, schema: str, dtype=torch.bfloat16) -> dict:
    """:func:`check_schema`, then each sublayer through the schema's ``convert_humming`` (vLLM's
    ``_convert_sublayer_to_humming``). -> ``{sub: (HummingWeightSchema, tensors, shape_n, shape_k)}``."""
    out = {}
    for sub, (ws, tensors, n, k) in check_schema(layout, schema, dtype).items():
        stacks = [n // 2] * 2 if sub == "w13" else [n]
        hs, conv = ws.convert_humming(dict(tensors), shape_n_stacks=stacks, shape_k_stacks=[k], param_dtype=dtype,
                                      num_experts=layout.num_local_experts, device=layout.w13.device)
        out[sub] = (hs, conv, n, k)
    return out


def build_humming_layer(layout: HummingLayout, schema: str, dtype=torch.bfloat16) -> torch.nn.Module:
    """A module holding ``w13_*`` / ``w2_*`` parameters transformed by Humming (GPU), as vLLM's
    ``convert_to_humming_moe_kernel_format`` leaves its ``RoutedExperts`` layer, plus ``locks``."""
    from humming.layer import HummingMethod
    from humming.schema import HummingInputSchema

    layer = torch.nn.Module()
    for sub, (ws, tensors, n, k) in convert_to_humming_schema(layout, schema, dtype).items():
        stacks = [n // 2] * 2 if sub == "w13" else [n]
        ins, _ = HummingInputSchema().convert_humming(tensors, shape_n_stacks=stacks, shape_k_stacks=[k],
                                                      param_dtype=dtype, num_experts=layout.num_local_experts,
                                                      device=layout.w13.device)
        for name, t in tensors.items():
            setattr(layer, f"{sub}_{name}", torch.nn.Parameter(t, requires_grad=False))
        HummingMethod.prepare_layer_meta(layer=layer, shape_n=n, shape_k=k, weight_schema=ws, input_schema=ins,
                                         num_experts=layout.num_local_experts, pad_n_to_multiple=PAD_N,
                                         pad_k_to_multiple=PAD_K, has_bias="bias" in tensors, torch_dtype=dtype,
                                         sublayer_name=sub)
        HummingMethod.transform_humming_layer(layer, sublayer_name=sub)
    layer.register_buffer("locks", torch.zeros(1024, dtype=torch.int32, device=layout.w13.device))
    return layer


def block_m_for(tuning: list, valid_shape_m: int) -> int:
    """vLLM's ``prepare_humming_moe_kwargs``: the M block of the tuning entry ``(lo, hi, config)`` with
    ``lo < valid_shape_m <= hi`` (Humming picks its kernel with the same rule), else 64."""
    for lo, hi, cfg in tuning:
        if lo < valid_shape_m <= hi:
            return int(cfg["block_shape"][0])
    return DEFAULT_BLOCK_M


def align_for_humming(topk_ids, num_local: int, expert_offset: int, block_m: int):
    """-> (sorted_ids int32 ``[nb*block_m]``, expert_ids int32 ``[nb]``, num_tokens_padded int32 ``[1]``):
    vLLM's ``moe_align_block_size`` outputs for Humming's indexed GEMM, which runs
    ``ceil(num_tokens_padded / block_m)`` blocks (``include/humming/scheduler.cuh``); the fixed tail of
    unused blocks (expert id = E_local) is never read."""
    from ..kernels.triton_moe import SMALL_ALIGN_MAX_PAIRS, align_pairs, align_pairs_small

    small = topk_ids.is_cuda and topk_ids.numel() <= SMALL_ALIGN_MAX_PAIRS
    a = (align_pairs_small if small else align_pairs)(topk_ids, num_local, expert_offset, block_m)
    used = (a.block_expert < num_local).sum(dtype=torch.int32).reshape(1) * block_m
    return a.sorted_ids.to(torch.int32), a.block_expert.to(torch.int32), used


def combine(down, topk_ids, topk_weights, num_local: int, expert_offset: int, out=None):
    """``sum_k w_k * down[m*k + j]`` in fp32 -> bf16 ``[M, H]``, skipping pairs outside the shard."""
    import triton

    from ..kernels.triton_moe import _combine_kernel

    m, k = topk_ids.shape
    h = down.shape[-1]
    out = torch.empty(m, h, dtype=torch.bfloat16, device=down.device) if out is None else out
    if m:
        bh = min(1024, triton.next_power_of_2(h))
        _combine_kernel[(m, triton.cdiv(h, bh))](
            down, topk_ids.contiguous(), topk_weights.float().contiguous(), down, out, expert_offset, num_local,
            down.stride(0), 0, out.stride(0), H=h, top_k=k, HAS_BIAS=False, BLOCK_H=bh,
            INTERPRET=topk_ids.device.type == "cpu")
    return out


class HummingMoE(MoEBackend):
    """Humming's indexed MXFP4 GEMMs in vLLM's MoE data flow (module docstring)."""

    name = "humming"
    graph_capturable = True  # vLLM captures it; all sizes depend on M, k, E only
    gpu_only = True
    gemm_kernel_pattern = GEMM_KERNEL_PATTERN

    def __init__(self, moe: LogicalMoE, config=None):
        super().__init__(moe, config)
        from .triton_kernels import _scalar

        fmt = "gpt_oss" if config is None else config.checkpoint_format
        self.schema = SCHEMA[fmt]
        self.layout = humming_layout_from_logical(moe)
        self.compute_config = json.dumps({"use_batch_invariant": False, "use_f16_accum": False, "gemm_type": "indexed"})
        self._hm, self.layer, self.tuning = self._setup()
        self.tuning_str = {sub: json.dumps(t) for sub, t in self.tuning.items()}
        self.act = {k: _scalar(v, k) for k, v in self.swiglu.items()}
        #: checks: fill the intermediate and output buffers with NaN before each call
        self.poison = False

    def _setup(self):
        """-> (``HummingMethod``, the transformed layer, ``{sub: tuning entries}``) (GPU)."""
        from humming.config import GemmType
        from humming.layer import HummingMethod

        layer = build_humming_layer(self.layout, self.schema)
        tuning = {sub: HummingMethod.get_default_tuning_configs(
            layer=layer, use_f16_accum=False, use_batch_invariant=False, gemm_type=GemmType.INDEXED,
            sublayer_name=sub) for sub in ("w13", "w2")}
        return HummingMethod, layer, tuning

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import humming
        except Exception as exc:  # noqa: BLE001
            return False, f"humming is not importable ({type(exc).__name__}: {exc}); pip install humming-kernels==0.1.19"
        if not torch.cuda.is_available():
            return False, f"humming {humming.__version__} needs a CUDA GPU (JIT-compiled kernels)"
        return True, ""

    def valid_shape_m(self, m: int, k: int) -> int:
        """vLLM's ``estimate_local_valid_shape_m``: the pairs this shard expects."""
        return math.ceil(m * k * self.layout.num_local_experts / self.layout.num_experts_total)

    def describe(self, m: int) -> dict:
        import humming

        k = None if self.config is None else self.config.top_k
        d = {"humming": humming.__version__, "schema": self.schema}
        if k is not None:
            v = self.valid_shape_m(m, k)
            d.update(valid_shape_m=v, block_m=block_m_for(self.tuning["w13"], v))
        return d

    def forward(self, x, topk_ids, topk_weights):
        m, k = topk_ids.shape
        lay, dev = self.layout, x.device
        v = self.valid_shape_m(m, k)
        sorted_ids, expert_ids, padded = align_for_humming(topk_ids, lay.num_local_experts, lay.expert_offset,
                                                           block_m_for(self.tuning["w13"], v))
        common = {"sorted_ids": sorted_ids, "expert_ids": expert_ids, "num_tokens_padded": padded,
                  "compute_config": self.compute_config, "valid_shape_m": v}
        new = (lambda *s: torch.full(s, float("nan"), dtype=torch.bfloat16, device=dev)) if self.poison else \
            (lambda *s: torch.empty(s, dtype=torch.bfloat16, device=dev))
        gate_up, down = new(m * k, 2 * lay.intermediate_size), new(m * k, lay.hidden_size)
        self._hm.forward_layer(layer=self.layer, inputs=x.contiguous(), outputs=gate_up, sublayer_name="w13",
                               top_k=k, tuning_config=self.tuning_str["w13"], **common)
        act = swiglu_packed(gate_up, self.act["swiglu_alpha"], self.act["swiglu_beta"],
                            self.act["swiglu_limit"], out=new(m * k, lay.intermediate_size))
        self._hm.forward_layer(layer=self.layer, inputs=act, outputs=down, sublayer_name="w2", top_k=1,
                               tuning_config=self.tuning_str["w2"], **common)
        return combine(down, topk_ids, topk_weights, lay.num_local_experts, lay.expert_offset,
                       out=new(m, lay.hidden_size))
