"""The FlashInfer SM90 backend's persisted tactics (:mod:`mxfp4lab.flashinfer_build.tactics` on a GPU).

Per call: the token count goes through FlashInfer's own bucket rule (``map_to_hybrid_bucket``); the pair of
tactics for (GPU, build, layer shape, bucket) comes from memory, else from the build's ``tactics.json``,
else FlashInfer's autotuner tunes every bucket of this layer shape once (its normal first-call sweep), the
picks are read back from its cache (:func:`~mxfp4lab.flashinfer_build.tactics.harvest`) and saved. The pair
goes to ``cutlass_fused_moe(..., profile_ids=[gemm1, gemm2])``, which then skips the autotuner.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ..flashinfer_build.tactics import LayerShape, TacticCache, TacticKey, gpu_identity, harvest, tactics_path


class PersistedTactics:
    """Tactics of one backend instance: ``profile_ids`` per call, ``ensure`` (tune + save when missing)."""

    def __init__(self, spec, p, tune_max_num_tokens: int, fused_finalize: bool):
        from flashinfer.fused_moe.utils import map_to_hybrid_bucket

        props = torch.cuda.get_device_properties(p.w13.device)
        self.gpu = gpu_identity(props.name, props.multi_processor_count, (props.major, props.minor))
        self.build_key = spec.info["key"]
        self.cache = TacticCache(tactics_path(spec.root), self.build_key)
        self.max_tokens = int(tune_max_num_tokens)
        self._map = map_to_hybrid_bucket
        self._dims = dict(
            num_experts=int(p.w13.shape[0]),
            hidden=int(p.padded_hidden),
            inter=int(p.w2.shape[2]) * 2,
            tp_size=p.shard.tp_size,
            ep_size=p.shard.ep_size,
            bias=p.w13_bias is not None,
            bias2=p.w2_bias is not None,
            fused_finalize=bool(fused_finalize),
        )
        self._pairs: Dict[Tuple[int, int], Tuple[int, int]] = {}
        #: top_k -> "cache" (read from tactics.json) or "tuned" (tuned and saved by this process)
        self.source: Dict[int, str] = {}
        self._last_k = None

    def bucket(self, m: int) -> int:
        return int(self._map(int(m), self.max_tokens))

    def shape(self, top_k: int) -> LayerShape:
        return LayerShape(top_k=int(top_k), **self._dims)

    def _counts(self) -> Tuple[int, int]:
        """GEMM1 / GEMM2 tactic counts of the W4A16 runner FlashInfer's autotune call created (the ranges the
        indices must fall in). ``get_cutlass_fused_moe_module`` returns a namespace (``MoERunner``,
        ``cutlass_fused_moe``, ...), not the compiled module; ``MoERunner.runner_dict`` holds one compiled
        runner per instance key (x, weight and output dtypes, fp8 block scale, w4 group scaling, mxfp8
        activation scaling, packed weights, fused finalize, wfp4afp8 Humming) -- FlashInfer 0.7.2's
        ``fused_moe/core.py``, ``MoERunner.__init__``."""
        import flashinfer.fused_moe.core as core

        ns = core.get_cutlass_fused_moe_module("90")
        runners = getattr(getattr(ns, "MoERunner", None), "runner_dict", None)
        if runners is None:
            raise RuntimeError("flashinfer.fused_moe.core.get_cutlass_fused_moe_module('90') has no "
                               "MoERunner.runner_dict (FlashInfer's runner cache moved?): cannot count tactics")
        ff = self._dims["fused_finalize"]
        key = (torch.bfloat16, torch.uint8, torch.bfloat16, False, True, False, False, ff, False)
        r = runners.get(key)
        if r is None:  # another weight dtype spelling: the one W4-group-scaling runner of this finalize mode
            found = [v for k, v in runners.items() if len(k) == len(key) and k[4] is True and k[7] == ff]
            if len(found) != 1:
                raise RuntimeError(f"no single W4A16 runner in FlashInfer's MoERunner.runner_dict after the "
                                   f"autotune call (keys: {list(runners)})")
            r = found[0]
        return int(r.get_gemm1_tactic_count()), int(r.get_gemm2_tactic_count())

    def _tune(self, backend, x, topk_ids, topk_weights, shape: LayerShape) -> None:
        from flashinfer.autotuner import AutoTuner
        from flashinfer.fused_moe.utils import get_hybrid_num_tokens_buckets

        backend._autotune_call(x, topk_ids, topk_weights)
        buckets = get_hybrid_num_tokens_buckets(self.max_tokens)
        table = harvest(AutoTuner.get().profiling_cache.items(), shape, buckets)
        if not table:
            raise RuntimeError(
                f"FlashInfer's autotuner ran for layer {shape.key} but its cache holds no GEMM1 + GEMM2 pick "
                "for it "
                "(the key layout of flashinfer.autotuner changed?): cannot persist tactics"
            )
        g1, g2 = self._counts()
        self.cache.record(
            self.gpu, shape, table, tune_max_num_tokens=self.max_tokens, gemm1_count=g1, gemm2_count=g2
        )
        self.cache.save()
        self.source[shape.top_k] = "tuned"

    def ensure(self, backend, x, topk_ids, topk_weights) -> None:
        """Tune and save this layer shape's table unless the cache has it (for ``tune_max_num_tokens``)."""
        shape = self.shape(topk_ids.shape[1])
        if self.cache.covers(self.gpu, shape, tune_max_num_tokens=self.max_tokens):
            self.source.setdefault(shape.top_k, "cache")
            return
        self._tune(backend, x, topk_ids, topk_weights, shape)

    def profile_ids(self, backend, x, topk_ids, topk_weights) -> List[int]:
        """``[gemm1, gemm2]`` for this call; tunes (outside CUDA graph capture) when the bucket is missing."""
        k, b = int(topk_ids.shape[1]), self.bucket(x.shape[0])
        self._last_k = k
        pair = self._pairs.get((k, b))
        if pair is None:
            shape = self.shape(k)
            key = TacticKey(self.gpu, self.build_key, shape, b, self.max_tokens)
            pair = self.cache.lookup(key)
            if pair is None:
                if torch.cuda.is_current_stream_capturing():
                    raise RuntimeError(
                        f"no tuned tactics for layer {shape.key}, bucket {b} during CUDA graph capture: call "
                        "tune(x, topk_ids, topk_weights) before capturing"
                    )
                self._tune(backend, x, topk_ids, topk_weights, shape)
                pair = self.cache.lookup(key)
                if pair is None:
                    raise RuntimeError(f"FlashInfer's autotuner left bucket {b} of layer {shape.key} untuned")
            self.source.setdefault(k, "cache")
            self._pairs[(k, b)] = pair
        return list(pair)

    def describe(self, m: int) -> dict:
        """The pair this backend runs for ``m`` tokens (last top-k seen) and where it came from."""
        k = self._last_k
        pair = None if k is None else self._pairs.get((k, self.bucket(m)))
        return {
            "bucket": self.bucket(m),
            "gemm1": None if pair is None else pair[0],
            "gemm2": None if pair is None else pair[1],
            "source": self.source.get(k),
        }
