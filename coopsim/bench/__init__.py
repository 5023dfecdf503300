"""nccl-tests-style collective benchmarks on a simulated machine (the library).

``python -m coopsim.bench allreduce -b 8 -e 1M`` (or the console script ``coopsim-bench``)
prints nccl-tests' ``all_reduce_perf`` table; the output contract is
docs/adr/0010-bench-output-contract.md, the layout docs/adr/0013-configs-and-bench-layout.md.
One module a job: ``options`` (flags -> ``Config``), ``data`` (inputs and expected values),
``calls`` (what every rank does: barrier, buffers, the collective), ``runner`` (the timed
sweep), ``check`` (``#wrong``), ``report`` (table, JSON, CSV, plot), ``cli`` (the commands).
"""
