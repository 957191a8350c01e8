"""Options of the fault tests (docs/faults.md).

- `--faults-long`: also run the long version (7 validators + 2 observers,
  `--faults-minutes` of random faults under load; default 30).
- `--faults-seed N`: the seed of the fault schedule (default 1; the test prints it).
- `--faults-mode auto|netns|proxy`: the network mode (default auto: namespaces
  when running as root and `ip netns add` works, else the TCP proxy).

pytest reads these only from a conftest it loads at start-up, so pass the
directory: `pytest tests/faults --faults-long`. The environment variables
REDWOOD_FAULTS_LONG=1, REDWOOD_FAULTS_SEED, REDWOOD_FAULTS_MODE and
REDWOOD_FAULTS_MINUTES work from anywhere.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "fault tests on real processes (docs/faults.md)")
    group.addoption("--faults-long", action="store_true", help="also run the 30-minute version")
    group.addoption("--faults-seed", type=int, default=None, help="fault schedule seed")
    group.addoption(
        "--faults-mode", choices=("auto", "netns", "proxy"), default=None, help="network mode"
    )
    group.addoption("--faults-minutes", type=float, default=None, help="length of the long run")
