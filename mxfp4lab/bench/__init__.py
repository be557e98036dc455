"""Benchmarks: each prints a table and writes JSON with provenance (never timed tests).

* ``python -m mxfp4lab.bench.layout``  CPU throughput of the SM90 interleave / fold vs clone()
* ``python -m mxfp4lab.bench.prepare`` wall time and peak memory to prepare one real layer on CPU
"""
