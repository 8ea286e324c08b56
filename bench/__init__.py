"""Benchmark: a load client, the baseline servers it compares against, and the runner."""
