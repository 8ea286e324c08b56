"""Markers by tier, so `pytest -m "not browser"` and friends select what they say."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.redis)
