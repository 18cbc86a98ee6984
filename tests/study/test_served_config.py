"""winner.json serves what the trial measured: a secret-looking string planted in a prompt is
masked in the study's records, never in the config `tournament pick` writes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.study.test_sweep import sweep_file
from tournament.cli import app

runner = CliRunner()


def test_pick_writes_the_config_the_trials_server_ran(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir, monkeypatch):
    from tournament.serving import process

    secret = "PLANTEDsecretValue42"
    monkeypatch.setenv("TOURNAMENT_TEST_API_KEY", secret)  # a secret-named variable: its value is masked
    prefix = f"Use key sk-PLANTED789abcdefghijklmnopq and {secret} to answer. "
    started: list[dict] = []  # the configs the trial's real servers were started with
    original_init = process.ServerProcess.__init__

    def recording_init(self, serve_config=None, **kw):
        if serve_config is not None:
            started.append(json.loads(json.dumps(serve_config)))
        original_init(self, serve_config, **kw)

    monkeypatch.setattr(process.ServerProcess, "__init__", recording_init)
    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=1, enqueue=[],
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir), "prompt": {"prefix": prefix},
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": 4}, "mode": "batch"})
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"])
    assert r.exit_code == 0, r.output
    assert len(started) == 1 and started[0]["prompt"]["prefix"] == prefix
    stored = json.loads((runs_dir / "studies" / "t" / "trials" / "0000" / "serve_config.json").read_text())
    assert secret not in json.dumps(stored) and "sk-PLANTED789" not in json.dumps(stored)  # masked for showing

    out = tmp_path / "winner.json"
    r = runner.invoke(app, ["pick", "--trial", "0", "--runs-dir", str(runs_dir), "--local", "--out", str(out)])
    assert r.exit_code == 0, r.output
    served = json.loads(out.read_text(encoding="utf-8"))["serve"]
    assert served == started[0]
    assert json.dumps(served, sort_keys=True) == json.dumps(started[0], sort_keys=True)

    # the sweep file moved: pick takes it from --config; changed: pick refuses rather than write another config
    moved = tmp_path / "moved.yaml"
    cfg.rename(moved)
    r = runner.invoke(app, ["pick", "--trial", "0", "--runs-dir", str(runs_dir), "--local", "--out", str(out)])
    assert r.exit_code != 0 and "--config" in r.output
    r = runner.invoke(app, ["pick", "--trial", "0", "--runs-dir", str(runs_dir), "--local", "--out", str(out),
                            "--config", str(moved)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text(encoding="utf-8"))["serve"] == started[0]
    moved.write_text(moved.read_text(encoding="utf-8").replace("PLANTED789", "CHANGED789"), encoding="utf-8")
    out.unlink()
    r = runner.invoke(app, ["pick", "--trial", "0", "--runs-dir", str(runs_dir), "--local", "--out", str(out),
                            "--config", str(moved)])
    assert r.exit_code != 0 and "not the one the trial served" in r.output and not out.exists()
