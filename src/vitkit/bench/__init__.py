"""Benchmarking: what ``vitkit bench`` and ``benchmarks/*.py`` measure with (timing side by side, matmul peak,
memory, the Hugging Face speed reference).

Not on the inference path: :mod:`vitkit.perf` is the run-time policy every command uses; this package sits above
it and above :mod:`vitkit.checkpoints` (the reference model is converted from a vitkit one), and only the bench
command and the benchmarks import it.
"""
