"""The dashboard is proven against a real Prometheus scraping a real localnet.

- `promtool` accepts deploy/prometheus/prometheus.yml and rules.yml, and the
  rules' own unit tests (rules_test.yml) pass;
- a 4-validator localnet (`redwood testnet` + `redwood start` processes) runs,
  a Prometheus on 127.0.0.1 scrapes its metrics ports every second with the
  alert rules loaded, clients submit transactions, and EVERY query of EVERY
  panel of deploy/grafana/dashboards/redwood.json (variables substituted the
  way Grafana would) returns at least one finite value.

Prometheus comes from the Debian package `prometheus`; run as root, the test
installs it with .ci/install-tools when missing; otherwise it skips, saying so.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.client import Client
from storage.keyfile import read_key
from tests.integration.harness import PORTS_PER_NODE, Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "redwood.json"
SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval: at least 4 scrape intervals
DATA_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0


def _install_hint() -> str:
    return "apt-get install prometheus (or run .ci/install-tools as root)"


def prometheus_tools() -> tuple[str, str]:
    """Paths of `prometheus` and `promtool`, installing them as root if missing."""
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if prom and tool:
        return prom, tool
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"Prometheus is not installed and this is not root: {_install_hint()}")
    done = subprocess.run(
        [str(REPO / ".ci" / "install-tools")], capture_output=True, text=True, timeout=900
    )
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    assert prom and tool, f"installing prometheus failed:\n{done.stdout}\n{done.stderr}"
    return prom, tool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_promtool_accepts_the_config_and_the_rules() -> None:
    _, promtool = prometheus_tools()
    for args in (
        ["check", "config", str(PROM_DIR / "prometheus.yml")],
        ["check", "rules", str(PROM_DIR / "rules.yml")],
        ["test", "rules", str(PROM_DIR / "rules_test.yml")],
    ):
        done = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, cwd=PROM_DIR
        )
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


# -- the dashboard's queries -----------------------------------------------------------


def dashboard_panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows are containers), including panels nested in rows."""
    out = []
    for panel in doc["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $var and ${var} as Grafana does; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"query uses unknown variable ${name}: {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def regex_alternation(items: list[str]) -> str:
    """A multi-value variable in a PromQL =~ string, regex-escaped as Grafana does."""
    escaped = [re.escape(i).replace("\\", "\\\\") for i in sorted(items)]
    return "(" + "|".join(escaped) + ")"


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = []
    for series in result:
        value = float(series["value"][1])
        if math.isfinite(value):
            values.append(value)
    return values


class Prometheus:
    """A Prometheus server on 127.0.0.1 with a temporary data directory."""

    def __init__(self, binary: str, root: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(PROM_DIR / "rules.yml")],
            "scrape_configs": [{"job_name": "redwood", "static_configs": [{"targets": targets}]}],
        }
        self.config_path = root / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_path = root / "prometheus.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_tail()}")
        return httpx.get(self.url + "/-/ready", timeout=2).status_code == 200

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster")
    cluster.create()
    cluster.start_all()
    try:
        try:
            cluster.wait_ready(timeout_s=START_TIMEOUT_S)
        except AssertionError:
            logs = "\n".join(node.log_tail(60) for node in cluster.nodes)
            if "consensus.replica" in logs and (
                "ModuleNotFoundError" in logs or "ImportError" in logs
            ):
                pytest.skip("node.service cannot start: consensus.replica is missing")
            raise
        yield cluster
    finally:
        cluster.stop_all()


def submit_some(cluster: Cluster, clients: list[Client], round_: int) -> None:
    """A few puts per round: most to node0 (its commit-latency histogram), some to the others."""
    for i, client in enumerate(clients):
        agency = f"agency{i % cluster.validators}"
        key = read_key(cluster.client_key(i % cluster.validators))
        for j in range(4 if i == 0 else 1):
            client.put(key, agency, f"ops-{round_}-{i}-{j}", f"value {round_}")


def check_panels(
    prom: Prometheus, panels: list[dict[str, Any]], values: dict[str, str]
) -> dict[str, str]:
    """{panel title / refId: why it has no data} for every query without a finite value."""
    missing = {}
    for panel in panels:
        for target in panel["targets"]:
            expr = substitute(target["expr"], values)
            result = prom.api("query", query=expr)["result"]
            if not finite_values(result):
                missing[f"{panel['title']} / {target['refId']}"] = f"{expr} -> {result}"
    return missing


def test_every_dashboard_panel_returns_data_from_a_real_prometheus(
    localnet: Cluster, tmp_path: Path
) -> None:
    binary, _ = prometheus_tools()
    cluster = localnet
    metrics_ports = [cluster.base_port + PORTS_PER_NODE * i + 2 for i in range(len(cluster.nodes))]
    targets = [f"127.0.0.1:{port}" for port in metrics_ports]
    prom = Prometheus(binary, tmp_path / "prometheus", targets)
    clients = [Client(node.api) for node in cluster.nodes]
    try:
        wait_until("prometheus ready", prom.ready, 30)

        def all_up() -> bool:
            active = prom.api("targets")["activeTargets"]
            return len(active) == len(targets) and all(t["health"] == "up" for t in active)

        wait_until("every node scraped", all_up, 30)

        # the dashboard's variables, resolved through Prometheus as Grafana does
        doc = json.loads(DASHBOARD.read_text())
        variables = {v["name"]: v for v in doc["templating"]["list"]}
        assert set(variables) == {"datasource", "chain_id", "instance"}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        chains = prom.api("label/chain_id/values", **{"match[]": "redwood_build_info"})
        assert chains == [cluster.chain_id]
        series = prom.api("series", **{"match[]": f'redwood_build_info{{chain_id="{chains[0]}"}}'})
        instances = sorted({s["instance"] for s in series})
        assert instances == sorted(targets)
        values = {
            "datasource": "prometheus",
            "chain_id": chains[0],
            "instance": regex_alternation(instances),
            "__rate_interval": RATE_INTERVAL,
            "__interval": SCRAPE_INTERVAL,
        }
        panels = dashboard_panels(doc)
        assert len(panels) >= 15
        for panel in panels:
            assert panel["targets"], f"panel {panel['title']!r} has no query"

        deadline = time.monotonic() + DATA_TIMEOUT_S
        missing: dict[str, str] = {}
        round_ = 0
        while True:
            submit_some(cluster, clients, round_)
            round_ += 1
            missing = check_panels(prom, panels, values)
            if not missing or time.monotonic() > deadline:
                break
        assert not missing, "panels without data:\n" + "\n".join(
            f"- {k}: {v}" for k, v in missing.items()
        )

        def rules_healthy() -> bool:
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) >= 5 and all(r.get("health") == "ok" for r in rules)

        wait_until("alert rules evaluated without error", rules_healthy, 20)
        firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
        assert not firing, f"alerts firing on a healthy localnet: {firing}"
    finally:
        for client in clients:
            client.close()
        prom.stop()
