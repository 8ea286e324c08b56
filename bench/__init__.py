"""Benchmark: a load client, the baseline servers it compares against, the runner, and a
deliberately faulty server that tests the bench's own checks."""
