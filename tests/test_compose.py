"""docker-compose.yml and the Dockerfile, read as files (Docker does not run on these machines):
the services are there, their commands are real entry points with real options, every service
mounts the shared volume at the same path, the Ray workers reserve NVIDIA GPUs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from faceedit import cli

REPO = Path(__file__).resolve().parents[1]
MOUNT = "/faceedit"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def command_lines(service: dict) -> list[list[str]]:
    """The command(s) a service runs, as argument lists (a `sh -c` script split at && and ;)."""
    cmd = service["command"]
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if cmd[:2] == ["sh", "-c"]:
        script = cmd[2].replace("$$", "$")
        return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]
    return [cmd]


def faceedit_calls(compose: dict) -> list[tuple[str, list[str]]]:
    calls = []
    for name, service in compose["services"].items():
        for argv in command_lines(service):
            argv = argv[1:] if argv[0] == "exec" else argv
            if argv[0] == "faceedit":
                calls.append((name, argv[1:]))
    return calls


def test_the_services_are_there(compose):
    assert {"ray-head", "ray-worker", "train", "editor"} <= set(compose["services"])
    head = command_lines(compose["services"]["ray-head"])[0]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    worker = command_lines(compose["services"]["ray-worker"])[0]
    assert worker[:2] == ["ray", "start"] and "--address=ray-head:6379" in worker and "--block" in worker


def test_faceedit_commands_exist_and_parse(compose):
    """Each `faceedit SUB ...` in the file is a real subcommand and its options parse."""
    calls = faceedit_calls(compose)
    assert {sub[0] for _, sub in calls} >= {"train", "serve"}
    parser = cli.build_parser()
    for service, argv in calls:
        assert argv[0] in cli.COMMANDS, f"{service}: faceedit {argv[0]} is not a subcommand"
        argv = [a.replace("$WORKERS", "2") for a in argv]
        args = parser.parse_args(argv)  # SystemExit on an unknown option
        assert args.command == argv[0]


def test_the_training_job_submits_to_the_head_on_gpus(compose):
    train = compose["services"]["train"]
    assert train["environment"]["RAY_ADDRESS"] == "ray-head:6379"
    (name, argv), = [c for c in faceedit_calls({"services": {"train": train}})]
    args = cli.build_parser().parse_args([a.replace("$WORKERS", "2") for a in argv])
    assert args.workers == 2 and args.gpu == "yes" and args.storage.startswith(MOUNT)
    assert str(args.cache).startswith(MOUNT) and str(args.out).startswith(MOUNT)
    # it joins the cluster as a node without resources, so the driver runs on a cluster node
    join = command_lines(train)[0]
    assert join[:2] == ["ray", "start"] and "--num-cpus=0" in join and "--num-gpus=0" in join


def test_the_editor_listens_in_the_container_and_publishes_to_localhost(compose):
    editor = compose["services"]["editor"]
    (name, argv), = faceedit_calls({"services": {"editor": editor}})
    args = cli.build_parser().parse_args(argv)
    assert args.host == "0.0.0.0"
    assert editor["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]
    # binding 0.0.0.0 needs an explicit choice about a login, or `faceedit serve` refuses to start
    from ui.app import check_exposure, parse_auth

    check_exposure(args.host, args.share, parse_auth(args.auth), args.no_auth)


def test_one_volume_at_the_same_path_everywhere(compose):
    volumes = {name: service.get("volumes") for name, service in compose["services"].items()}
    assert all(v == [f"faceedit:{MOUNT}"] for v in volumes.values()), volumes
    assert "faceedit" in compose["volumes"]
    paths = [a for _, argv in faceedit_calls(compose) for a in argv if a.startswith("/")]
    assert paths and all(p.startswith(MOUNT + "/") for p in paths), paths


def test_ray_workers_reserve_nvidia_gpus(compose):
    devices = compose["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    for name in ("ray-head", "ray-worker", "train"):  # every Ray process shares the cluster token
        env = compose["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in env


def test_the_dockerfile_copies_what_exists_and_installs_the_entry_point():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    assert "pip install" in text
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'faceedit = "faceedit.cli:main"' in pyproject  # the `faceedit` command of the services


def test_every_dollar_is_an_interpolation_compose_understands():
    """Compose reads `${VAR}` / `${VAR:-default}` / `${VAR:?error}` and `$$` (a literal $ for the
    container's shell); anything else, e.g. `$(`, stops `docker compose` with a format error."""
    for n, line in enumerate((REPO / "docker-compose.yml").read_text().splitlines(), 1):
        text = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        for m in re.finditer(r"\$(?!\$)", text.replace("$$", "")):
            assert re.match(r"\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}$]*)?\}", text.replace("$$", "")[m.start():]), \
                f"docker-compose.yml:{n}: {line.strip()}"
