"""The container image builds (where a Docker daemon is available), and its files make sense."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vgen_app.config import ROOT


def test_dockerfile_and_compose_are_consistent() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2  # multi-stage
    assert "USER vgen" in dockerfile and "reflex export --frontend-only" in dockerfile
    assert "/api/health" in dockerfile
    compose = (ROOT / "compose.yaml").read_text()
    for service in ("db:", "redis:", "app:", "landing:"):
        assert service in compose
    assert "REDIS_URL" in compose and "GRANIAN_WORKERS" in compose
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".web" in ignored and "var" in ignored


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return (
        subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode
        == 0
    )


@pytest.mark.skipif(
    not _docker_daemon(), reason="no Docker daemon on this machine: image not built"
)
def test_docker_build() -> None:
    result = subprocess.run(
        ["docker", "build", "-t", "vgen:test", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
