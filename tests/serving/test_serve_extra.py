"""serve.py needs only the `serve` extra, laid out exactly as the Dockerfile lays it out.

- fast: importing serve.py pulls in none of optuna / mlflow / peft (nor torch / transformers /
  vLLM, which only the engine imports when it loads);
- slow: the image rehearsal, without Docker: the Dockerfile's COPY steps into a folder,
  download_model.py --source local, then `uvicorn serve:app` there with the transformers engine
  on a tiny model (this venv's torch), answering GET / and POST /predict;
- slow: a fresh Python 3.10 virtualenv (the judge image's Python; falls back to this Python if no
  3.10 exists here, and says so) with ONLY docker/requirements-serve.txt installed: serve.py
  imports, download_model.py runs, and the app answers GET / and POST /predict (a stub engine:
  torch is not installable offline for 3.10 here).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tournament.images import checks as images
from tournament.paths import REPO_ROOT
from tournament.serving.process import free_port

FORBIDDEN = ("optuna", "mlflow", "peft")
NOT_AT_IMPORT = ("torch", "transformers", "vllm")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNAMENT_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def test_serve_imports_no_sweep_or_training_libs():
    code = (
        "import sys, json\n"
        "import serve\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))\n"
        % ((*FORBIDDEN, *NOT_AT_IMPORT),)
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                       env=_clean_env(TOURNAMENT_WINNER="none"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, doc, timeout: float = 60.0):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _stage(tmp_path: Path, winner_doc: dict, dockerfile: str = "Dockerfile") -> Path:
    w = tmp_path / "winner.json"
    w.write_text(json.dumps(winner_doc))
    return images.stage_image_files(REPO_ROOT / dockerfile, tmp_path / "img", REPO_ROOT, winner=w)


@pytest.mark.slow
def test_image_rehearsal_with_transformers_engine(tmp_path, tiny_model_dir):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    src = tiny_model_dir
    winner = {"schema": 1, "serve": {
        "model": {"path": "models/winner", "modelscope_id": "someone/tiny", "revision": "v1"},
        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8},
        "decode": {"max_tokens": 8}, "mode": "batch"}}
    app_dir = _stage(tmp_path, winner)
    env = _clean_env(PYTHONPATH=str(app_dir), TOURNAMENT_WINNER=str(app_dir / "winner.json"))
    # the package the server imports is the staged copy, not this checkout
    r = subprocess.run([sys.executable, "-c", "import tournament; print(tournament.__file__)"], cwd=app_dir,
                       env=env, capture_output=True, text=True)
    assert r.stdout.strip() == str(app_dir / "tournament/__init__.py"), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "download_model.py", str(app_dir / "winner.json"), "--source", "local",
                        "--from", str(src)], cwd=app_dir, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (app_dir / "models/winner/model.safetensors").exists()
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serve:app", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                health = _get(url + "/")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.time() < deadline, "server did not come up in 120 s"
                time.sleep(0.5)
        assert health == {"status": "batch"}
        out = _post(url + "/predict", {"prompt": ["什么是 warp？", "What is tiling?"]})
        assert len(out["response"]) == 2 and all(isinstance(a, str) and a for a in out["response"])
        info = _get(url + "/info")
        assert info["engine"] and Path(info["config"]["model"]["path"]) == Path("models/winner")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# -- a fresh Python 3.10 virtualenv with only the serve requirements -----------------------------


def find_python310() -> str | None:
    cands = [os.environ.get("TOURNAMENT_PY310", "")]
    cands += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")), reverse=True)
    cands += sorted(glob.glob("/root/.pyenv/versions/3.10*/bin/python3.10"), reverse=True)
    cands += [shutil.which("python3.10") or ""]
    for c in cands:
        if not c:
            continue
        try:
            r = subprocess.run([c, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 10))"],
                               capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if r.stdout.strip() == "True":
            return c
    return None


SERVE_REQS = REPO_ROOT / "docker/requirements-serve.txt"
LOCK = REPO_ROOT / "docker/requirements-mthreads.lock.txt"

STUB_CHECK = r'''
import json, sys, threading, time, urllib.request
import tournament.serving.app as appmod

class Stub:
    name = "stub"
    tokenizer = None
    def generate(self, prompts, decode):
        return ["tile width 16 " + str(len(p)) for p in prompts]
    def close(self):
        pass

appmod.load_engine = lambda *a, **k: Stub()
import serve
assert serve.app is appmod.app
import uvicorn
port = int(sys.argv[1])
server = uvicorn.Server(uvicorn.Config(serve.app, host="127.0.0.1", port=port, log_level="warning"))
t = threading.Thread(target=server.run, daemon=True)
t.start()
url = f"http://127.0.0.1:{port}"
for _ in range(200):
    try:
        health = json.loads(urllib.request.urlopen(url + "/", timeout=2).read())
        break
    except OSError:
        time.sleep(0.1)
req = urllib.request.Request(url + "/predict", data=json.dumps({"prompt": ["q1", "q2", "q1"]}).encode(),
                             headers={"Content-Type": "application/json"})
pred = json.loads(urllib.request.urlopen(req, timeout=30).read())
server.should_exit = True
t.join(10)
import jieba, rouge_score, modelscope  # the rest of the serve requirements import too
mods = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"python": sys.version.split()[0], "health": health, "predict": pred, "modules": mods,
                  "tournament": __import__("tournament").__file__}))
'''


def _serve_venv(python: str) -> Path:
    """A venv with only the serve requirements, cached by (python, requirement files) hash."""
    ver = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    key = hashlib.sha256((ver + SERVE_REQS.read_text() + LOCK.read_text()).encode()).hexdigest()[:16]
    venv = Path(tempfile.gettempdir()) / f"tournament-serve-extra-{key}"
    py = venv / "bin/python"
    if (venv / ".complete").exists() and py.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(SERVE_REQS), "-c", str(LOCK)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (venv / ".complete").write_text("ok\n")
    return venv


@pytest.mark.slow
def test_serve_extra_only_fresh_venv(tmp_path):
    python = find_python310()
    if python is None:
        python = sys.executable
        print(f"NOTE: no Python 3.10 here; using {sys.version.split()[0]} for the serve-extra venv")
    venv = _serve_venv(python)
    vpy = str(venv / "bin/python")
    # nothing but the serve requirements: no torch, no typer/rich/httpx/yaml (the core's deps)
    r = subprocess.run([vpy, "-c", "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
                        "for m in ('torch', 'transformers', 'optuna', 'mlflow', 'peft', 'typer', 'yaml', 'tournament')}))"],
                       capture_output=True, text=True, cwd=tmp_path, env=_clean_env())
    assert not any(json.loads(r.stdout).values()), r.stdout + r.stderr

    winner = {"schema": 1, "serve": {"model": {"path": "models/winner", "modelscope_id": "someone/tiny", "revision": "v1"},
                                     "engine": {"engine": "vllm"}, "mode": "batch", "warmup": True}}
    app_dir = _stage(tmp_path, winner)
    env = _clean_env(PYTHONPATH=str(app_dir), TOURNAMENT_WINNER=str(app_dir / "winner.json"))
    # download_model.py runs in this venv (no torch): a hand-made minimal model folder
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "tokenizer.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (src / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    r = subprocess.run([vpy, "download_model.py", "--source", "local", "--from", str(src)], cwd=app_dir, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "check.py").write_text(STUB_CHECK)
    r = subprocess.run([vpy, str(tmp_path / "check.py"), str(free_port())], cwd=app_dir, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"serve-extra venv: Python {doc['python']}")
    if python != sys.executable:
        assert doc["python"].startswith("3.10.")
    assert doc["tournament"] == str(app_dir / "tournament/__init__.py")
    assert doc["health"] == {"status": "batch"}
    assert doc["predict"]["response"][0] == doc["predict"]["response"][2] and len(doc["predict"]["response"]) == 3
    heavy = [m for m in doc["modules"] if m in (*FORBIDDEN, *NOT_AT_IMPORT)]
    assert heavy == []
