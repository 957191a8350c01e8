#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 if the node's `GET /health` answers 200, else 1.

The API address comes from the node's own configuration (node.toml plus the
REDWOOD_API_LISTEN override), so the check follows a changed port. A wildcard
listen address is reached on the loopback interface.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0


def api_url(env: dict[str, str]) -> str:
    from node.config import ConfigError, listen_address, load_config

    home = env.get("REDWOOD_HOME") or "/var/lib/redwood/node"
    try:
        host, port = listen_address(load_config(home, env).api.listen)
    except ConfigError:
        host, port = "127.0.0.1", 7701
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def main() -> int:
    url = api_url(dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
