"""Benchmarks: ``python -m benches.<name>``. Figures are ratios measured side by side in one run."""
