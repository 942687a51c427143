"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

There is no Docker engine on our machines (the issue says so), so the files are read as
Docker would read them and checked against the repository: every service has an image,
bind mounts and COPY sources exist and reach the build, network namespaces and
dependencies name real services, nothing listens twice in the shared namespace, the
commands parse with the real ``gateway`` argument parser, the configurations the setup
service writes give each gateway the metrics port Prometheus scrapes, and Grafana's
dashboard provider reads where the dashboards are mounted. The compose file is also
validated against the official compose-spec schema that check-jsonschema ships. The
image's health check script runs against a real gateway.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.cli.demo import COUNTRIES
from gateway.cli.main import _CONFIG_TEMPLATE, COMMANDS, build_parser
from gateway.cli.process import ServerProcess
from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GATEWAYS = [c.id for c in COUNTRIES]
PROMETHEUS_PORT, GRAFANA_PORT = 9090, 3000
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 (where Docker publishes a port given no address)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))  # resolves << merges
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def shared_owner(compose: dict[str, Any]) -> str:
    """The service whose network namespace the gateways share."""
    modes = {s.get("network_mode") for name, s in services(compose).items()
             if name in GATEWAYS}
    assert len(modes) == 1, modes
    (mode,) = modes
    assert isinstance(mode, str) and mode.startswith("service:")
    return mode.removeprefix("service:")


def image_of(compose: dict[str, Any], name: str) -> str:
    service = services(compose)[name]
    return str(service.get("image", ""))


def uses_our_image(service: dict[str, Any]) -> bool:
    return "build" in service


# --- the compose file -------------------------------------------------------------------


def test_the_compose_file_has_the_federation_prometheus_and_grafana(compose) -> None:
    names = set(services(compose))
    assert set(GATEWAYS) <= names
    assert {"prometheus", "grafana"} <= names
    assert image_of(compose, "prometheus").startswith("prom/prometheus:")
    assert image_of(compose, "grafana").startswith("grafana/grafana:")
    for name in GATEWAYS:
        assert uses_our_image(services(compose)[name]), name


def test_every_service_has_an_image_or_a_build(compose) -> None:
    for name, service in services(compose).items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get(
                "dockerfile", "Dockerfile")
            assert (ROOT / context / dockerfile).is_file(), (name, context, dockerfile)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (not named volumes)."""
    mounts = []
    for item in service.get("volumes", []):
        if isinstance(item, dict):
            if item.get("type") == "bind":
                mounts.append((item["source"], item["target"]))
            continue
        source, _, rest = item.partition(":")
        target = rest.split(":")[0]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def test_bind_mounted_files_exist_in_the_repository(compose) -> None:
    mounted = 0
    for name, service in services(compose).items():
        for source, target in bind_mounts(service):
            assert not source.startswith(("/", "~")), f"{name}: {source} is outside the repo"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            assert target.startswith("/"), (name, target)
            mounted += 1
    assert mounted >= 4


def test_named_volumes_are_declared(compose) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services(compose).items():
        for item in service.get("volumes", []):
            source = item["source"] if isinstance(item, dict) else item.partition(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_network_modes_and_dependencies_name_real_services(compose) -> None:
    names = set(services(compose))
    for name, service in services(compose).items():
        mode = service.get("network_mode")
        if mode is not None:
            assert mode in ("none", "host", "bridge") or (
                mode.startswith("service:") and mode.removeprefix("service:") in names), (
                name, mode)
            if mode.startswith("service:"):
                # Compose refuses ports on a service that joins another's namespace.
                assert "ports" not in service, name
        depends = service.get("depends_on", [])
        for other in depends:
            assert other in names and other != name, (name, other)
            if isinstance(depends, dict):
                assert depends[other].get("condition", "service_started") in (
                    "service_started", "service_healthy", "service_completed_successfully")


def test_everything_shares_one_namespace_owned_by_a_service_that_keeps_running(
        compose) -> None:
    owner = shared_owner(compose)
    for name in (*GATEWAYS, "prometheus", "grafana"):
        assert services(compose)[name].get("network_mode") == f"service:{owner}", name
    owner_service = services(compose)[owner]
    assert "network_mode" not in owner_service
    assert owner_service.get("restart") in ("always", "unless-stopped")


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    found = []
    for item in service.get("ports", []):
        if isinstance(item, dict):
            found.append((item.get("host_ip", ANY_ADDRESS), int(item["published"]),
                          int(item["target"])))
            continue
        parts = str(item).split("/")[0].split(":")
        if len(parts) == 3:
            found.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            found.append((ANY_ADDRESS, int(parts[0]), int(parts[1])))
        else:
            pytest.fail(f"give the host port explicitly: {item}")
    return found


def test_published_ports_are_unique_and_reach_prometheus_and_grafana(compose) -> None:
    ports = [p for s in services(compose).values() for p in published(s)]
    host_ports = [(addr, port) for addr, port, _ in ports]
    assert len(host_ports) == len(set(host_ports)), ports
    owner = published(services(compose)[shared_owner(compose)])
    assert {target for _, _, target in owner} == {PROMETHEUS_PORT, GRAFANA_PORT}
    # Only on the host's loopback: Grafana's first login is admin/admin.
    assert {addr for addr, _, _ in ports} == {"127.0.0.1"}


def command_of(compose: dict[str, Any], name: str) -> list[str]:
    command = services(compose)[name].get("command")
    assert command is not None, f"{name}: no command"
    return command if isinstance(command, list) else shlex.split(command)


def test_gateway_commands_parse_with_the_real_parser(compose) -> None:
    parser = build_parser()
    entrypoint = dockerfile_exec("ENTRYPOINT")
    assert entrypoint == ["gateway"]
    for name, service in services(compose).items():
        if not uses_our_image(service) or "entrypoint" in service:
            continue
        argv = command_of(compose, name)
        args = parser.parse_args(argv)  # SystemExit (a test error) if it does not parse
        assert args.command in COMMANDS, (name, argv)
        if name in GATEWAYS:
            assert args.command == "run"
            assert str(args.config) == f"/data/{name}/gateway.toml"
            # The health check reads the same configuration.
            assert service["environment"]["FPG_CONFIG"] == str(args.config)
    setup = parser.parse_args(command_of(compose, "setup"))
    assert (setup.command, setup.setup_only, str(setup.dir)) == ("demo", True, "/data")
    for name in GATEWAYS:
        depends = services(compose)[name]["depends_on"]
        assert depends["setup"]["condition"] == "service_completed_successfully"


def named_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume, of the service's named-volume mounts."""
    mounts = {}
    for item in service.get("volumes", []):
        source, _, rest = item.partition(":")
        if not source.startswith((".", "/", "~")):
            mounts[rest.split(":")[0]] = source
    return mounts


@pytest.fixture(scope="module")
def set_up(compose, tmp_path_factory) -> dict[str, Path]:
    """What the setup service leaves in its volumes: its own command, run with a temporary
    directory in place of each volume it mounts. Volume name -> that directory."""
    volumes = {volume: tmp_path_factory.mktemp(volume)
               for volume in named_mounts(services(compose)["setup"]).values()}
    by_path = {path: volumes[volume]
               for path, volume in named_mounts(services(compose)["setup"]).items()}
    argv = []
    for arg in command_of(compose, "setup"):
        for path, directory in by_path.items():
            if arg == path or arg.startswith(path + "/"):
                arg = str(directory) + arg[len(path):]
        argv.append(arg)
    done = subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return volumes


def gateway_configs(compose: dict[str, Any], volumes: dict[str, Path]) -> dict[str, Any]:
    data = volumes["fpg-data"]
    configs = {}
    for name in GATEWAYS:
        args = build_parser().parse_args(command_of(compose, name))
        path = data / PurePosixPath(str(args.config)).relative_to("/data")
        configs[name] = load_config(path)
    return configs


def test_prometheus_scrapes_the_metrics_ports_the_gateways_get(compose, set_up) -> None:
    """Prometheus discovers its targets in files (targets/*.json beside prometheus.yml);
    the setup service writes them into a volume that Prometheus mounts there."""
    prometheus_service = services(compose)["prometheus"]
    mounts = dict(bind_mounts(prometheus_service))
    config_source = next(s for s, t in mounts.items() if t == "/etc/prometheus/prometheus.yml")
    prometheus = yaml.safe_load((ROOT / config_source).read_text())
    targets = {}
    for job in prometheus["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            for pattern in sd["files"]:
                where = PurePosixPath("/etc/prometheus") / pattern
                volume = named_mounts(prometheus_service)[str(where.parent)]
                found = sorted(set_up[volume].glob(where.name))
                assert found, f"the setup service wrote no {pattern} into {volume}"
                for path in found:
                    for group in json.loads(path.read_text()):
                        for target in group["targets"]:
                            targets[target] = group["labels"]["gateway"]
    configs = gateway_configs(compose, set_up)
    expected = {f"{c.metrics.host}:{c.metrics.port}": name for name, c in configs.items()}
    assert targets == expected
    listeners = [(c.server.host, c.server.port) for c in configs.values()] + [
        (c.metrics.host, c.metrics.port) for c in configs.values()]
    ports = [port for _, port in listeners] + [PROMETHEUS_PORT, GRAFANA_PORT]
    assert len(ports) == len(set(ports)), "two listeners on one port in the shared namespace"
    for c in configs.values():  # the one namespace works because all of it is loopback
        assert c.server.host == c.metrics.host == "127.0.0.1"
        assert {p.url for p in c.partners} <= {f"http://127.0.0.1:{o.server.port}"
                                               for o in configs.values()}
    # rule_files are relative to prometheus.yml: each is mounted beside it.
    for rule_file in prometheus.get("rule_files", []):
        beside = str(PurePosixPath("/etc/prometheus") / rule_file)
        source = next((s for s, t in mounts.items() if t == beside), None)
        assert source is not None, f"{rule_file} is not mounted beside prometheus.yml"
        assert (ROOT / source).is_file()


def test_grafana_finds_the_provisioned_dashboards_and_prometheus(compose) -> None:
    mounts = {t: ROOT / s for s, t in bind_mounts(services(compose)["grafana"])}
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text())["providers"]]
    assert providers
    for provider in providers:
        path = provider["options"]["path"]
        assert path in mounts, f"nothing is mounted at {path}"
        assert list(mounts[path].glob("*.json")), f"no dashboard in {mounts[path]}"
        for dashboard in mounts[path].glob("*.json"):
            json.loads(dashboard.read_text())
    home = services(compose)["grafana"].get("environment", {}).get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        directory, _, file = home.rpartition("/")
        assert (mounts[directory] / file).is_file()
    sources = [d for f in sorted((provisioning / "datasources").glob("*.y*ml"))
               for d in yaml.safe_load(f.read_text())["datasources"]]
    assert any(d["type"] == "prometheus" and d["url"] == f"http://127.0.0.1:{PROMETHEUS_PORT}"
               for d in sources), sources


def test_docker_compose_1_29_accepts_the_file() -> None:
    """docker-compose 1.29 (Debian's package, which CI installs) validates the file;
    FPG_REQUIRE_COMPOSE (set by CI) makes its absence a failure, not a skip."""
    program = shutil.which("docker-compose")
    if program is None:
        if "FPG_REQUIRE_COMPOSE" in os.environ:
            pytest.fail("docker-compose is not on PATH and FPG_REQUIRE_COMPOSE is set "
                        "(Debian: apt-get install --no-install-recommends docker-compose)")
        pytest.skip("docker-compose is not on PATH; set FPG_REQUIRE_COMPOSE=1 to fail")
    done = subprocess.run([program, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
                           "config", "--quiet"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # The project name is not in the file (1.29 refuses a top-level `name:`): .env has it.
    assert "name" not in yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert "COMPOSE_PROJECT_NAME=fpg-demo" in (ROOT / ".env").read_text().splitlines()


def test_the_compose_file_follows_the_compose_specification() -> None:
    # check-jsonschema is a dev dependency: without it this fails, it does not skip.
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.compose-spec", str(COMPOSE_FILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the Dockerfile and .dockerignore -------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return instructions


def dockerfile_exec(instruction: str) -> list[str]:
    """The last ENTRYPOINT or CMD, in exec (JSON) form."""
    found = [rest for word, rest in dockerfile_instructions() if word == instruction]
    assert found, f"no {instruction}"
    value = json.loads(found[-1])  # exec form, so that signals reach the gateway
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern
    matching the path or one of its parent directories decides; ``!`` re-includes."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, body) or (
                    body.startswith("**/") and (fnmatch.fnmatchcase(
                        candidate.rsplit("/", 1)[-1], body[3:]) or fnmatch.fnmatchcase(
                            candidate, body[3:]))):
                verdict = not negate
                break
    return verdict


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = ["*", "!gateway/", "**/__pycache__"]
    assert ignored("tests/test_x.py", patterns)
    assert not ignored("gateway/cli/main.py", patterns)
    assert ignored("gateway/__pycache__/cli.cpython-311.pyc", patterns)


def test_dockerfile_copies_what_exists_and_reaches_the_build() -> None:
    patterns = dockerignore_patterns()
    copies = [rest for word, rest in dockerfile_instructions() if word in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            files = [source] if (ROOT / source).is_file() else [
                str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
            assert files, source
            for file in files:
                if "__pycache__" not in file:
                    assert not ignored(file, patterns), f"{file} is excluded by .dockerignore"
    # What `pip install` needs is there; secrets and local state never are.
    for needed in ("pyproject.toml", "README.md", "gateway/__init__.py", "gateway/cli/main.py"):
        assert not ignored(needed, patterns), needed
    for local in (".git/config", ".venv/bin/python", ".run/demo/vn-mps/keys/gateway.key",
                  "tests/test_demo.py", "gateway/__pycache__/cli.cpython-311.pyc"):
        assert ignored(local, patterns), local


def test_dockerfile_builds_a_non_root_gateway_image_with_a_health_check() -> None:
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    # One Python release on one Debian release, not a moving tag.
    word, base = instructions[0]
    assert word == "FROM" and re.fullmatch(
        r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    run = " ".join(rest for w, rest in instructions if w == "RUN")
    assert "pip install -c /src/constraints.txt /src" in run  # the pinned versions
    users = [rest for w, rest in instructions if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert "VOLUME" in words and "EXPOSE" in words
    assert words.index("USER") < words.index("ENTRYPOINT")
    health = next(rest for w, rest in instructions if w == "HEALTHCHECK")
    check = json.loads(health[health.index("CMD") + 3:].strip())
    assert check[0] == "python" and "curl" not in health
    script = next(rest.split()[-2] for w, rest in instructions
                  if w == "COPY" and rest.split()[-1] == check[1])
    assert (ROOT / script).is_file()
    entrypoint, command = dockerfile_exec("ENTRYPOINT"), dockerfile_exec("CMD")
    assert entrypoint == ["gateway"]
    args = build_parser().parse_args(command)
    assert args.command == "run" and args.command in COMMANDS
    env = " ".join(rest for w, rest in instructions if w == "ENV")
    assert f"FPG_CONFIG={args.config}" in env


def test_the_image_carries_the_example_config_the_generated_one_points_to() -> None:
    copied = {rest.split()[-1]: rest.split()[-2] for w, rest in dockerfile_instructions()
              if w == "COPY"}
    example = "/usr/local/share/fpg/gateway.example.toml"
    assert copied.get(example) == "config/gateway.example.toml"
    assert example in _CONFIG_TEMPLATE


def test_named_volume_mount_points_belong_to_the_gateway_user(compose) -> None:
    """A named volume takes the owner of its mount point in the image: every one that a
    service of our image mounts is made and given to the unprivileged user."""
    run = " ".join(rest for w, rest in dockerfile_instructions() if w == "RUN")
    made = re.search(r"mkdir ([^&]+)&& chown fpg:fpg ([^&]+)", run)
    assert made is not None, run
    owned = set(made.group(1).split()) & set(made.group(2).split())
    for name, service in services(compose).items():
        if uses_our_image(service):
            assert set(named_mounts(service)) <= owned, name


def test_the_health_check_script_asks_a_real_gateway(tmp_path) -> None:
    """docker/healthcheck.py against a demo gateway on free ports (not the compose file's,
    in case a demo runs on this machine)."""
    script = ROOT / "docker" / "healthcheck.py"
    made = subprocess.run([sys.executable, "-m", "gateway", "demo", "--setup-only",
                           "--free-ports", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    config = tmp_path / "vn-mps" / "gateway.toml"

    def health() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=30, env={**os.environ, "FPG_CONFIG": str(config)})

    assert health().returncode == 1  # nothing listens yet
    with ServerProcess.gateway(config) as server:
        answer = health()
        assert answer.returncode == 0, answer.stdout
        assert answer.stdout.startswith("ok: vn-mps at http://127.0.0.1:")
    assert server.returncode == 0
    assert health().returncode == 1  # stopped: nothing answers any more
