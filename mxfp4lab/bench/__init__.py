"""Benchmarks: each measures, and ``mxfp4lab bench <name>`` prints a table and writes a result file
(:mod:`mxfp4lab.results`; never timed tests).

* :mod:`.harness`  -- timing primitives: CUDA events, warm-up, medians, input rotation, CUDA graphs, ceilings
  (no mxfp4lab imports: a backend's tuner may use it)
* :mod:`.moe`      -- the GPU latency sweep (``mxfp4lab bench moe``)
* :mod:`.parallel` -- one layer over the GPUs of one host, TP / EP (``torchrun ... -m mxfp4lab bench parallel``);
  what each rank measures: :mod:`.parallel_timing`
* :mod:`.layout`   -- CPU throughput of the SM90 interleave / fold vs clone() (``mxfp4lab bench layout``)
* :mod:`.prepare`  -- wall time and peak memory to prepare one real layer on CPU (``mxfp4lab bench prepare``)
* :mod:`.validation` -- what the input/output checks cost a backend's call at small M (``mxfp4lab bench validation``)

The accuracy benchmark and the latency summary are studies (:mod:`mxfp4lab.studies`), run by
``mxfp4lab bench accuracy`` / ``mxfp4lab bench summary``.
"""
