"""Performance scripts: executor latency, batch throughput, the servers' overhead and
llama.cpp's prompt cache. Each runs from a checkout as ``python -m benchmarks.perf.NAME``,
prints a table and writes its report to ``benchmarks/reports/``.

They are not the bench harness (``codeloop bench``, which scores models on data sets)
and are not installed with it.
"""
