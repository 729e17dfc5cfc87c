"""The GPU benchmark of issues 7 and 11: the published loop against the library, side by side.

``python benchmarks/bench.py`` (or ``python -m benchmarks.bench``) is the command line;
``benchmarks/README.md`` says how to run it on a GPU machine.

* :mod:`benchmarks.workloads`: the clips, settings, networks (random weights) and inputs;
* :mod:`benchmarks.baseline`: the published loop, replayed (what every speed-up is a ratio to);
* :mod:`benchmarks.library`: the library under measurement, and what is still benchmark-only;
* :mod:`benchmarks.stages`: timers of each stage on both paths;
* :mod:`benchmarks.clocks`: budget, CUDA-event clocks, peak memory, stage errors;
* :mod:`benchmarks.measure`: one workload in every configuration, smoke and compile stages;
* :mod:`benchmarks.report`: ``bench.json`` and the markdown table;
* :mod:`benchmarks.memory_model`: the computed whole-clip memory model;
* ``memory.py`` (host memory vs clip length) and ``gpu_pipeline_check.py`` are scripts of their own.
"""
