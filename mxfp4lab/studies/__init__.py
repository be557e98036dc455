"""The three studies, each a module of tidy DataFrame builders with its figures beside it.

* :mod:`.layout` / :mod:`.layout_figures`     -- where MXFP4 elements and scales land in the SM90 layout (notebook 01)
* :mod:`.accuracy` / :mod:`.accuracy_figures` -- MXFP4 error vs the bf16 origin and the references (notebook 02)
* :mod:`.latency` / :mod:`.latency_figures`   -- latency vs tokens per backend, crossovers, dispatch (notebook 03)
  and :mod:`.latency_parallel`: one layer over 1-8 GPUs (TP / EP) from the recorded multi-GPU run
* :mod:`.startup`                             -- time to the first MoE call, as recorded

Data functions are pure (inputs -> DataFrame / dict) and never plot; figure functions take those frames,
return the Figure, and compute nothing beyond reshaping for display.
"""
