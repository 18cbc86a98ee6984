"""docker/pip-install-held.sh for real, in a stand-in "base image" (a fresh venv with older
fastapi/pydantic/uvicorn preinstalled, as a vLLM image has): the serve requirements go in, and
nothing the image already had changes version. Needs PyPI (CI has it); about a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tournament.paths import REPO_ROOT

IMAGE_HAS = {"fastapi": "0.115.0", "pydantic": "2.9.2", "uvicorn": "0.30.0"}


def _versions(py: Path) -> dict[str, str]:
    r = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True)
    return {ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1] for ln in r.stdout.splitlines() if "==" in ln}


@pytest.mark.slow
def test_held_install_keeps_the_base_image_versions(tmp_path):
    venv = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin/python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *[f"{k}=={v}" for k, v in IMAGE_HAS.items()]], check=True, timeout=300)
    before = _versions(py)
    env = {**os.environ, "PYTHON": str(py), "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    script = str(REPO_ROOT / "docker/pip-install-held.sh")
    r = subprocess.run(["sh", script, "-q", "-r", str(REPO_ROOT / "docker/requirements-serve.txt")],
                       env=env, capture_output=True, text=True, timeout=480)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "pip-install-held: ok" in r.stdout
    after = _versions(py)
    assert {k: after[k] for k in before} == before  # nothing the image had moved
    assert after["jieba"] == "0.42.1" and after["rouge-score"] == "0.1.2" and after["modelscope"] == "1.29.2"
    # a requirement that would replace something the image has fails the build, loudly
    r = subprocess.run(["sh", script, "-q", "fastapi==0.116.0"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert _versions(py)["fastapi"] == IMAGE_HAS["fastapi"]
