"""SFT on CPU with the tiny model: full + LoRA, merge, candidate.json, reuse, resume, MLflow, and
one end-to-end run: candidate YAML -> train -> serve.py -> judge emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_QA
from tournament.candidates import load_candidate, parse_candidate
from tournament.train.build import ensure_built

QA = TINY_QA[:5]  # 5 pairs: the step counts below are for 20 rows (x4) and 25 rows



def _cand(model: Path, dataset: Path, method: str = "full", cid: str | None = None, **recipe):
    r = {"method": method, "dataset": str(dataset), "batch_size": 4, "epochs": 1, "learning_rate": 1e-3,
         "max_length": 128, "seed": 0, **recipe}
    return parse_candidate({"id": cid or f"tiny-{method}", "base": {"path": str(model)},
                            "prompt": {"style": "chat", "system": "简洁回答"}, "recipe": r})


def _tensors(d: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_encode_masks_the_prompt_and_appends_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    from tournament.prompting import PromptSpec
    from tournament.train.examples import IGNORE, encode_example, pack

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    spec = PromptSpec(style="chat")
    ids, labels = encode_example(tok, spec, "什么是 warp？", " warp 是调度单位。 ", 128)
    assert len(ids) == len(labels)
    trained = [t for t in labels if t != IGNORE]
    assert trained[-1] == tok.eos_token_id
    assert tok.decode(trained[:-1]) == "warp 是调度单位。"
    n_prompt = labels.index(trained[0])
    from tournament.prompting import render_prompt

    assert tok.decode(ids[:n_prompt]) == render_prompt(spec, "什么是 warp？", tok)
    # the echo target and the answer cap
    _, l2 = encode_example(tok, spec, "Q1", "第一句。第二句很长很长。", 128, max_answer_chars=6,
                           target_template="{question}\n{answer}")
    assert tok.decode([t for t in l2 if t != IGNORE][:-1]) == "Q1\n第一句。"
    # long prompts keep their end; packing keeps whole examples
    ids3, l3 = encode_example(tok, spec, "很长的问题" * 200, "答案", 64)
    assert len(ids3) <= 64 and [t for t in l3 if t != IGNORE][-1] == tok.eos_token_id
    packed = pack([(ids, labels)] * 5, 128)
    assert sum(len(p[0]) for p in packed) == 5 * len(ids) and all(len(p[0]) <= 128 for p in packed)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_merge_and_manifest(tiny_model_dir, dataset, tmp_path, method):
    from transformers import AutoModelForCausalLM

    cand = _cand(tiny_model_dir, dataset, method, packing=(method == "lora"), grad_accum=2, epochs=5)
    model_dir = ensure_built(cand, tmp_path / "builds", max_steps=3)
    build = model_dir.parent
    assert build.name == f"tiny-{method}-{cand.config_hash(3)[:12]}"
    assert not build.with_name(build.name + ".tmp").exists()
    assert not (build / "checkpoints").exists()
    doc = json.loads((build / "candidate.json").read_text())
    assert doc["config_hash"] == cand.config_hash(3)
    assert doc["dataset"]["sha256"] == cand.dataset_fingerprint()["sha256"] and doc["dataset"]["rows"] == 20
    assert len(doc["base"]["sha256"]) == 64
    assert doc["versions"]["torch"] and doc["versions"]["transformers"] and doc["hardware"]["device"] == "cpu"
    curve = doc["train"]["loss_curve"]
    assert [s for s, _ in curve] == [1, 2, 3] and all(loss > 0 for _, loss in curve)
    assert doc["train"]["steps"] == 3 and doc["wall_seconds"] > 0
    assert doc["tokenizer_word_split_share"] is None  # the tiny vocabulary is too small to judge
    # a plain HF directory: merged weights, no adapter, tokenizer beside them
    assert (model_dir / "tokenizer.json").exists() and not (model_dir / "adapter_config.json").exists()
    after, before = _tensors(model_dir), _tensors(tiny_model_dir)
    assert set(after) == set(before)  # no lora_A/lora_B keys left
    assert any(not (after[k] == before[k]).all() for k in before)
    AutoModelForCausalLM.from_pretrained(str(model_dir))
    if method == "lora":
        assert doc["train"]["trainable_params"] < doc["train"]["total_params"]


def test_existing_build_is_reused(tiny_model_dir, dataset, tmp_path, monkeypatch):
    cand = _cand(tiny_model_dir, dataset, cid="reuse")
    first = ensure_built(cand, tmp_path, max_steps=1)
    stamp = (first.parent / "candidate.json").stat().st_mtime_ns

    import tournament.train.build as build

    def boom(*a, **k):
        raise AssertionError("retrained an existing build")

    monkeypatch.setattr(build, "build_candidate", boom)
    assert ensure_built(cand, tmp_path, max_steps=1) == first
    assert (first.parent / "candidate.json").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="retrained"):
        ensure_built(cand, tmp_path, max_steps=1, force=True)


# A build in its own process that stalls once step 8 is logged (checkpoint-6 is the last one):
# the test kills it there with SIGKILL, as a crash or an OOM kill would.
KILLED_BUILD = """
import sys, time
from pathlib import Path
from transformers import TrainerCallback
from tournament.candidates import load_candidate
from tournament.train.build import build_candidate

class StallAt8(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kw):
        if state.global_step == 8:
            print("at step 8", flush=True)
            time.sleep(600)

build_candidate(load_candidate(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), callbacks=[StallAt8()])
"""


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, dataset, tmp_path):
    import signal
    import subprocess
    import sys

    cand = _cand(tiny_model_dir, dataset, cid="resume", epochs=2, save_steps=3, dropout=0.0)  # 10 steps
    ref = json.loads((ensure_built(cand, tmp_path / "ref").parent / "candidate.json").read_text())

    yml = tmp_path / "resume.yaml"
    yml.write_text(yaml.safe_dump(cand.model_dump(mode="json"), allow_unicode=True))
    build = cand.build_dir(tmp_path / "b")
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(yml), str(tiny_model_dir), str(build)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "at step 8", child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    tmp = build.with_name(build.name + ".tmp")
    assert not build.exists() and (tmp / "checkpoints" / "checkpoint-6" / "trainer_state.json").exists()
    model_dir = ensure_built(cand, tmp_path / "b", resume=True)
    doc = json.loads((model_dir.parent / "candidate.json").read_text())
    steps = [json.loads(line)["step"] for line in (model_dir.parent / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # 1-6 before the kill, 7-10 after: nothing redone
    assert [s for s, _ in doc["train"]["loss_curve"]] == list(range(1, 11))
    for (_, a), (_, b) in zip(doc["train"]["loss_curve"], ref["train"]["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert doc["train"]["resumed_from"] == "checkpoint-6" and ref["train"]["resumed_from"] is None
    assert doc["train"]["steps"] == ref["train"]["steps"] == 10
    import torch

    resumed, uninterrupted = _tensors(model_dir), _tensors(cand.build_dir(tmp_path / "ref") / "model")
    assert set(resumed) == set(uninterrupted)
    assert all(torch.allclose(resumed[k], uninterrupted[k], rtol=1e-4, atol=1e-5) for k in resumed)


def test_mlflow_logging(tiny_model_dir, dataset, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    cand = _cand(tiny_model_dir, dataset, cid="ml")
    model_dir = ensure_built(cand, tmp_path / "builds", max_steps=2, mlflow_uri=uri)
    doc = json.loads((model_dir.parent / "candidate.json").read_text())
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(doc["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["recipe.method"] == "full" and run.data.params["config_hash"] == doc["config_hash"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert "candidate.json" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_method_none_returns_the_base_dir(tiny_model_dir, tmp_path):
    cand = parse_candidate({"id": "base", "base": {"path": str(tiny_model_dir)}})
    assert ensure_built(cand, tmp_path) == tiny_model_dir
    assert not any(tmp_path.iterdir())


def test_train_cli(tiny_model_dir, dataset, tmp_path):
    from typer.testing import CliRunner

    from tournament.cli import app

    yml = tmp_path / "cli.yaml"
    yml.write_text(yaml.safe_dump({"id": "cli", "base": {"path": str(tiny_model_dir)},
                                   "recipe": {"method": "lora", "dataset": str(dataset), "batch_size": 10}}))
    res = CliRunner().invoke(app, ["train", str(yml), "--builds", str(tmp_path / "b"), "--max-steps", "1",
                                   "--no-mlflow", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1 and Path(summary["model_dir"]).is_dir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nbase: {path: y}\nrecipe: {method: lora, datset: z}\n")
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "recipe.datset" in res.output


def test_train_cli_dataset_override_is_a_separate_build(tiny_model_dir, dataset, tmp_path):
    """--dataset (the refit for a submission) trains the same recipe on another data build: its
    rows reach the trainer, and the build gets its own config hash next to the first."""
    from typer.testing import CliRunner

    from tournament.cli import app

    refit = tmp_path / "refit"
    refit.mkdir()
    rows = [json.loads(x) for x in dataset.read_text(encoding="utf-8").splitlines()]
    rows += [{"question": f"{q}?", "answer": a} for q, a in QA]  # + the "eval" rows: 25
    (refit / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                       encoding="utf-8")
    (refit / "manifest.json").write_text(json.dumps({"refit": True}))
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"id": "c", "base": {"path": str(tiny_model_dir)},
                                   "recipe": {"method": "full", "dataset": str(dataset), "batch_size": 5,
                                              "epochs": 1, "max_length": 96}}))
    base_args = ["train", str(yml), "--builds", str(tmp_path / "b"), "--no-mlflow", "--device", "cpu", "--json"]
    runs = []
    for extra in ([], ["--dataset", str(refit)]):
        res = CliRunner().invoke(app, base_args + extra)
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    plain, refitted = runs
    assert plain["steps"] == 4 and refitted["steps"] == 5  # 20 rows vs 25 rows, batch 5
    assert plain["config_hash"] != refitted["config_hash"] and plain["build_dir"] != refitted["build_dir"]
    assert "refit" in res.stderr
    manifest = json.loads((Path(refitted["build_dir"]) / "candidate.json").read_text())
    assert str(refit / "train.jsonl") in json.dumps(manifest)
    res = CliRunner().invoke(app, base_args + ["--dataset", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.output
    none = tmp_path / "none.yaml"
    none.write_text(yaml.safe_dump({"id": "n", "base": {"path": str(tiny_model_dir)}}))
    res = CliRunner().invoke(app, ["train", str(none), "--dataset", str(refit)])
    assert res.exit_code == 2 and "nothing to train" in res.output


def test_end_to_end_yaml_train_serve_judge(tiny_model_dir, dataset, tmp_path):
    from tournament.judge.emulator import judge
    from tournament.serving.process import ServerProcess

    yml = tmp_path / "tiny-e2e.yaml"
    yml.write_text(yaml.safe_dump({
        "id": "tiny-e2e", "base": {"path": str(tiny_model_dir)},
        "prompt": {"style": "plain"},
        "recipe": {"method": "full", "dataset": str(dataset), "learning_rate": 3e-3, "epochs": 6,
                   "batch_size": 10, "max_length": 96},
    }, allow_unicode=True))
    cand = load_candidate(yml)
    model_dir = ensure_built(cand, tmp_path / "builds")
    qs, refs = [q for q, _ in QA], [a for _, a in QA]
    cfg = {"model": {"path": str(model_dir)}, "prompt": cand.prompt.model_dump(),
           "engine": {"engine": "transformers", "device": "cpu"}, "decode": {"max_tokens": 8}}
    with ServerProcess(cfg, log_path=tmp_path / "server.log") as server:
        report = judge(server.url, qs, refs, health_timeout=120, predict_timeout=120, poll=0.25)
    assert not report.failed, report.reason
    assert report.n == len(qs) and len(report.answers) == len(qs)
    assert all(a.strip() for a in report.answers), report.answers


@pytest.mark.gpu
def test_gpu_training_saves_bf16(tiny_model_dir, dataset, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    for method in ("full", "lora"):
        cand = _cand(tiny_model_dir, dataset, method, cid=f"gpu-{method}")
        model_dir = ensure_built(cand, tmp_path, max_steps=2, device="cuda")
        doc = json.loads((model_dir.parent / "candidate.json").read_text())
        assert doc["train"]["compute_dtype"] == "bfloat16" and doc["train"]["saved_dtype"] == "bfloat16"
        assert doc["hardware"]["gpu"]
