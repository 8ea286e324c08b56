"""Helpers shared by the test suite, the browser tests and the fault-injection tools."""
