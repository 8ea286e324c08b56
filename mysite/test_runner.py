"""Makes `python manage.py test [labels]` run pytest, so there is one suite and one runner."""

from __future__ import annotations

import argparse
from typing import Any


class PytestTestRunner:
    """A Django TEST_RUNNER that hands the labels to pytest (`chat.tests` → `--pyargs`)."""

    def __init__(
        self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs: Any
    ) -> None:
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Accept Django's usual --keepdb flag."""
        parser.add_argument("--keepdb", action="store_true", help="Preserve the test DB.")

    def run_tests(self, test_labels: list[str], **kwargs: Any) -> int:
        """Run pytest on the labels (dotted names or paths); return its exit status."""
        import pytest

        argv = ["--pyargs"] if test_labels else []
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity > 1:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        argv.extend(test_labels)
        return int(pytest.main(argv))
