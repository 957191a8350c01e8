"""Suite-wide options: `--run-slow` for soak/sweep tests, `--sim-seeds N` for the simulator sweep."""

import pytest

# before any test module imports a compiled module's source: node/__init__.py
# decides between the compiled build and the sources (node/native.py)
import node  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption(
        "--sim-seeds", type=int, default=None, help="run the simulator sweep over N seeds"
    )
    parser.addoption(
        "--sim-seed-start", type=int, default=0, help="first seed of the simulator sweep"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
