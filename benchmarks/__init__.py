"""``make bench``: the numbers README quotes, measured, written to benchmarks/results/."""
