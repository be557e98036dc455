"""The SM90 mixed-input (W4A16) GEMM configs a restricted build compiles, and the named config sets.

A config is a CTA tile (M, N, K), a cluster and a schedule (:class:`MixedConfig`, label form
``"128x64x128_coop_1x1x1"``). A build's candidate list (front = FlashInfer's default tactic) is a named set
(:data:`CONFIG_SETS`) or an explicit list: :func:`parse_configs` reads either from a string (the CLI's and
``$MXFP4LAB_BUILD_CONFIGS``'s form), :func:`resolve_configs` turns it into the ordered candidates.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Sequence, Tuple, Union

# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------

_SCHEDULES = {
    "pingpong": ("PINGPONG", "KernelTmaWarpSpecializedPingpong"),
    "cooperative": ("COOPERATIVE", "KernelTmaWarpSpecializedCooperative"),
}


@dataclasses.dataclass(frozen=True, order=True)
class MixedConfig:
    """One SM90 mixed-input grouped-GEMM config: CTA tile (M, N, K), cluster (M, N, 1), schedule.

    ``tile`` is in the kernel's (swap_ab) frame: M runs over weight rows (GEMM n), N over tokens,
    K over the reduction dim in elements.  ``schedule`` is ``"pingpong"`` or ``"cooperative"``.
    Label form: ``"128x64x128_coop_1x1x1"`` / ``"128x128x128_pingpong_2x1x1"``.
    """

    tile: Tuple[int, int, int]
    cluster: Tuple[int, int, int]
    schedule: str

    def __post_init__(self) -> None:
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}; got {self.schedule!r}")
        if self.schedule == "cooperative" and self.tile[0] < 128:
            # moe_gemm_template_dispatch_tma_ws_mixed_dtype.h: COOPERATIVE needs tile M >= 128.
            raise ValueError(f"cooperative schedule needs tile M >= 128 (got {self.tile})")

    @property
    def label(self) -> str:
        s = "coop" if self.schedule == "cooperative" else "pingpong"
        return f"{'x'.join(map(str, self.tile))}_{s}_{'x'.join(map(str, self.cluster))}"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.label

    @classmethod
    def parse(cls, label: str) -> "MixedConfig":
        """Parse ``"MxNxK_{coop|pingpong}_AxBx1"`` (raises ``ValueError`` naming the form)."""
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+)_(coop|cooperative|pingpong)_(\d)x(\d)x(\d)", label.strip())
        if not m:
            raise ValueError(
                f"config label {label!r} does not match 'MxNxK_{{coop|pingpong}}_AxBx1' "
                "(e.g. '128x64x128_coop_1x1x1')"
            )
        g = m.groups()
        sched = "pingpong" if g[3] == "pingpong" else "cooperative"
        return cls((int(g[0]), int(g[1]), int(g[2])), (int(g[4]), int(g[5]), int(g[6])), sched)

    def cpp(self) -> str:
        """C++ ``CutlassGemmConfig`` constructor expression (inside cutlass_heuristic.cpp)."""
        m, n, k = self.tile
        cm, cn, ck = self.cluster
        return (
            f"CutlassGemmConfig(CutlassTileConfigSM90::CtaShape{m}x{n}x{k}B, "
            f"MainloopScheduleType::{_SCHEDULES[self.schedule][0]}, EpilogueScheduleType::AUTO, "
            f"ClusterShape::ClusterShape_{cm}x{cn}x{ck})"
        )


def _cfg(label: str) -> MixedConfig:
    return MixedConfig.parse(label)


#: Always compiled: calcMaxWorkspaceSizeTmaWarpSpecializedMixedInput (FP4 weights: Ktile 256).
WORKSPACE_CONFIG = _cfg("128x64x256_coop_1x1x1")

_CLUSTERS = ((1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1))

#: What cutlass_heuristic.cpp returns under -DFAST_BUILD for WEIGHT_ONLY|GROUPED_GEMM on SM90:
#: tiles {128x128x128}, sm90_supports_coop() false -> PINGPONG, then the 4 clusters in order.
FAST_BUILD_CANDIDATES: Tuple[MixedConfig, ...] = tuple(
    MixedConfig((128, 128, 128), c, "pingpong") for c in _CLUSTERS
)


def _stock_candidates() -> Tuple[MixedConfig, ...]:
    """The stock (non-FAST_BUILD) SM90 WEIGHT_ONLY|GROUPED_GEMM candidate list, in order.

    Data read off cutlass_heuristic.cpp (FlashInfer 0.7.2): get_candidate_tiles_sm90's 29 tiles;
    schedule COOPERATIVE where sm90_supports_coop(tile) else PINGPONG; the 4 clusters per tile.
    Checked against the compiled stock heuristic by :func:`mxfp4lab.flashinfer_build.heuristic_candidates`
    (``stock=True``; docs/build.md).
    """
    tiles = [(64, n, k) for n in (16, 32, 64, 128) for k in (128, 256, 512)]
    tiles += [(128, n, k) for n in (16, 32, 64, 128) for k in (128, 256, 512)]
    tiles += [(128, 256, 128), (128, 256, 256), (256, 128, 128), (256, 128, 256), (256, 256, 128)]

    def coop(t: Tuple[int, int, int]) -> bool:
        m, n, k = t
        if m == 128 and n in (16, 32, 64):
            return k in (128, 256, 512)
        if m == 128 and n in (128, 256):
            return k in (128, 256)
        if m == 256 and n == 128:
            return k in (128, 256)
        if m == 256 and n == 256:
            return k == 128
        return False

    return tuple(
        MixedConfig(t, c, "cooperative" if coop(t) else "pingpong") for t in tiles for c in _CLUSTERS
    )


#: The default set. Measured on an H200 (data/results/build_w4a16_h200.json, latency_h200.json):
#: "minimal" (FAST_BUILD's 128x128x128 pingpong only) runs the GEMMs 10-30x slower than "compact"
#: after autotuning (GPT-OSS-120b M=1: 1110 us vs 78 us; M=1024: 25.8 ms vs 1.2 ms), for 33 s less
#: cold build (206 s vs 239 s). "minimal" remains useful for a quick correctness check.
DEFAULT_CONFIGS = "compact"

#: Named config sets.  "minimal" uses FlashInfer's own FAST_BUILD; the others a patched heuristic.
#: "compact": K-tile 128 only (valid for every H, I that is a multiple of 128, e.g. GPT-OSS 2944),
#: small token tiles for decode and 128/256 for prefill; stock candidates plus FAST_BUILD's default.
CONFIG_SETS: Dict[str, Tuple[MixedConfig, ...]] = {
    "minimal": FAST_BUILD_CANDIDATES,
    "compact": tuple(
        _cfg(x)
        for x in (
            "128x128x128_pingpong_1x1x1",  # front = default tactic (-1), same as FAST_BUILD's
            "128x16x128_coop_1x1x1",
            "128x32x128_coop_1x1x1",
            "128x64x128_coop_1x1x1",
            "128x128x128_coop_1x1x1",
            "128x256x128_coop_1x1x1",
            "64x16x128_pingpong_1x1x1",
            "64x32x128_pingpong_1x1x1",
            "64x64x128_pingpong_1x1x1",
            "128x128x128_coop_2x1x1",
        )
    ),
    "full": _stock_candidates(),
    # The stock candidates with K-tile 128 (11 tiles x 4 clusters = 44), in stock order. For a layer whose
    # GEMM K is not a multiple of 256 (GPT-OSS: K = 2944 = 23 x 128 in both GEMMs) this is exactly the part
    # of "full" the autotuner can use: FlashInfer's isProfileShapeSupported drops every tactic with
    # gemm_k % tile_k != 0 (csrc/fused_moe/cutlass_backend/flashinfer_cutlass_fused_moe_binding.cu,
    # FlashInfer 0.7.2). Built in ~40% of the time of "full" to answer "does compact cost speed?" there.
    "stock_k128": tuple(c for c in _stock_candidates() if c.tile[2] == 128),
}


def resolve_configs(
    configs: Union[str, Sequence[Union[str, MixedConfig]]] = DEFAULT_CONFIGS,
) -> Tuple[Tuple[MixedConfig, ...], bool]:
    """Return ``(candidates, use_fast_build)`` for a config-set name or an explicit list.

    ``candidates`` is the ordered list the heuristic will offer (front = default tactic);
    ``use_fast_build`` is True only for ``"minimal"`` (FlashInfer's -DFAST_BUILD, no patch).
    """
    if isinstance(configs, str):
        if configs not in CONFIG_SETS:
            raise ValueError(f"configs must be one of {sorted(CONFIG_SETS)} or a list of labels; got {configs!r}")
        return CONFIG_SETS[configs], configs == "minimal"
    out: List[MixedConfig] = []
    for c in configs:
        c = c if isinstance(c, MixedConfig) else MixedConfig.parse(c)
        if c not in out:
            out.append(c)
    if not out:
        raise ValueError("configs: an explicit config list must not be empty")
    return tuple(out), False


def compiled_configs(candidates: Sequence[MixedConfig]) -> Tuple[MixedConfig, ...]:
    """The compiled set: the candidates plus :data:`WORKSPACE_CONFIG` (sorted, unique)."""
    return tuple(sorted(set(candidates) | {WORKSPACE_CONFIG}))



def parse_configs(s: str) -> Union[str, List[str]]:
    """A config-set name (``"compact"``) as is, or comma-separated labels as a list (empty items dropped):
    the string form the CLI and ``$MXFP4LAB_BUILD_CONFIGS`` use, for :func:`resolve_configs`."""
    return s if s in CONFIG_SETS else [x for x in s.split(",") if x]
