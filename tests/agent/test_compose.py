"""docker-compose.yml as Compose reads it (Debian's docker-compose parses it without a Docker engine):
valid with and without the GPU profile, every command one the CLI accepts, every EMO_ variable a setting,
the GPU worker reserving an NVIDIA device, and every Dockerfile it builds present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.cli import build_parser
from agent.config import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        reason = "docker-compose not installed (scripts/setup.sh --with-compose installs Debian's)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def config(compose: str, *profiles: str) -> dict:
    args = [compose, "-f", str(REPO / "docker-compose.yml")]
    for profile in profiles:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "COMPOSE_"))}
    checked = subprocess.run([*args, "config", "-q"], capture_output=True, text=True, env=env, cwd=REPO)
    assert checked.returncode == 0, checked.stderr
    shown = subprocess.run([*args, "config"], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    return yaml.safe_load(shown.stdout)


def settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is None:
            names.add(f"EMO_{name.upper()}")
        else:
            names |= {f"EMO_{name.upper()}__{key.upper()}" for key in sub}
    return names


def test_the_file_is_valid_with_and_without_the_gpu_profile(compose: str) -> None:
    for services in (config(compose)["services"], config(compose, "gpu")["services"]):
        # (Compose v1 lists profiled services too; `up` starts them only with their profile.)
        assert set(services) == {"redis", "emo-agent", "perception-worker", "perception-worker-gpu"}
        started_by_default = {name for name, service in services.items() if not service.get("profiles")}
        assert started_by_default == {"redis", "emo-agent", "perception-worker"}


def test_every_service_runs_a_real_command_with_real_settings(compose: str) -> None:
    services = config(compose, "gpu")["services"]
    known = settings_variables()
    for name, service in services.items():
        env = service.get("environment", {})
        assert {k for k in env if k.startswith("EMO_")} <= known, name
        command = service.get("command")
        if name == "redis":
            continue
        assert command[0] == "emo-agent", name
        build_parser().parse_args(command[1:])  # exits on a command the CLI does not have
        build = service["build"]
        assert (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).is_file(), name
        assert "redis" in service["depends_on"]
    # The assistant sends its turns to the workers, which share its Redis and queue settings.
    agent, worker = services["emo-agent"]["environment"], services["perception-worker"]["environment"]
    assert agent["EMO_PERCEPTION__MODE"] == "redis-streams"
    for key in (
        "EMO_REDIS_URL",
        "EMO_PERCEPTION_QUEUE__JOB_TIMEOUT_S",
        "EMO_PERCEPTION_QUEUE__RECLAIM_IDLE_S",
    ):
        assert agent[key] == worker[key] == services["perception-worker-gpu"]["environment"][key]
    Settings(_env_file=None, **{"perception": {"mode": agent["EMO_PERCEPTION__MODE"]}})


def test_the_gpu_worker_reserves_an_nvidia_gpu_and_runs_on_cuda(compose: str) -> None:
    service = config(compose, "gpu")["services"]["perception-worker-gpu"]
    assert service["profiles"] == ["gpu"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service["environment"]["EMO_PERCEPTION__DEVICE"].startswith("cuda")
    assert service["build"]["dockerfile"] == "Dockerfile.gpu"
    dockerfile = (REPO / "Dockerfile.gpu").read_text()
    assert "torch==2.13.0" in dockerfile and "grep -v '^torch=='" in dockerfile  # CUDA torch, not the CPU pin
