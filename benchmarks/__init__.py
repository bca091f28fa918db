"""Benchmarks of vapnev_tf: `quality.py` (bits/dim at equal wall-clock budget) and
`throughput.py` (images/s, memory, FLOP efficiency). Run from the repository root:

    python -m benchmarks.quality --budget_minutes=20
    python -m benchmarks.throughput
"""
