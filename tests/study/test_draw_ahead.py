"""Recipes drawn ahead (`build_budget.ahead`): a drawn recipe that must train takes the next draws
along, so their builds train beside it; the trials drawn ahead run later, in order, after the
running recipe's group; a sweep that stops first hands them back to the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.study.test_recipes import _sweep_file
from tournament.cli import app
from tournament.study.draw_ahead import NOT_RUN, DrawnAhead

runner = CliRunner()


def test_draws_wait_with_a_heartbeat_and_a_stopped_sweep_queues_them_again(tmp_path):
    """A real sqlite storage: each draw is a RUNNING trial with a heartbeat, asked with the sampler
    given (not the study's current one); a draw that cannot name its candidate still waits;
    release fails the unrun draws and enqueues each with its parameters, and the failed ones no
    longer count towards --trials; a later draw takes the queued trials first, as given, and
    then samples as many as asked."""
    import optuna
    from optuna.trial import TrialState

    from tournament.study.optuna_storage import make_storage
    from tournament.study.recovery import counted

    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    fixed = optuna.samplers.PartialFixedSampler({"x": 0.5}, optuna.samplers.RandomSampler(seed=1))
    study.sampler = fixed
    lines: list[str] = []
    ahead = DrawnAhead(storage, lines.append)

    def suggest(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            raise ValueError("over budget")  # e.g. OverBudget: the trial says so when it runs
        return f"key-{x:.3f}"

    drawn = ahead.draw(study, optuna.samplers.RandomSampler(seed=0), 3, suggest)
    assert [t.number for t, _ in drawn] == [0, 2] and len(ahead) == 3
    assert study.sampler is fixed  # the study's sampler is back
    assert len({k for _, k in drawn}) == 2 and all(k != "key-0.500" for _, k in drawn)  # sampled, not fixed
    trials = study.get_trials()
    assert all(t.state == TrialState.RUNNING and t.user_attrs["drawn_ahead"] for t in trials)
    assert all(beat.enabled for _, beat in ahead._pending)  # sqlite records heartbeats: none goes stale
    assert "drew 2 recipe(s) ahead (trials 0, 2)" in lines[-1]

    first = ahead.pop()
    assert first.number == 0 and len(ahead) == 2
    study.tell(first, [1.0])
    released = ahead.release(study)
    assert released == [1, 2] and len(ahead) == 0
    trials = study.get_trials()
    for n in (1, 2):
        assert trials[n].state == TrialState.FAIL and trials[n].user_attrs["fail_reason"] == NOT_RUN
    again = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in again) == [1, 2]
    assert {json.dumps(t.system_attrs["fixed_params"], sort_keys=True) for t in again} == {
        json.dumps(trials[n].params, sort_keys=True) for n in (1, 2)}
    assert counted(trials) == 1  # the finished trial alone: the released ones are superseded, the retries wait
    from tournament.study.record import TrialRecord
    from tournament.study.recovery import finished_counts

    # the summary counts the released draws apart: stopped and queued again, not failed
    assert finished_counts(trials) == {"complete": 1, "failed": 0, "queued_again": 2, "distinct": 1}
    from tournament.study.sweep_result import SweepResult
    from tournament.study.sweep_view import summary_lines

    line = summary_lines(SweepResult("s", "sqlite://", [0], 1, 0, [], distinct=1, queued_again=2), None)[0]
    assert "1 complete (1 distinct), 0 failed in total, 2 stopped before they ran out and queued again" in line

    row = TrialRecord.from_trial(trials[1])  # the board's row of a draw never run: no candidate, no build yet
    assert (row.candidate, row.build, row.fail_reason) == (None, None, NOT_RUN)
    # the queue goes first: the two retries are taken along as they were given, then 2 sampled draws
    again = ahead.draw(study, optuna.samplers.RandomSampler(seed=0), 2, suggest)
    assert [t.number for t, _ in again] == [3, 4, 5, 6] and len(ahead) == 4
    assert [k for _, k in again[:2]] == [f"key-{trials[n].params['x']:.3f}" for n in (1, 2)]
    assert not study.get_trials(states=(TrialState.WAITING,))
    assert ahead.draw(study, optuna.samplers.RandomSampler(seed=0), 0, suggest) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_recipe_trains_with_the_recipes_drawn_ahead_and_they_run_after_its_group(
        tmp_path, tiny_model_dir, tiny_qa_file, runs_dir, monkeypatch):
    """One sweep, 3 recipes of budget, 2 drawn ahead, 2 trials per recipe: the first draw's batch
    trains all three recipes (6 builds, 2 at a time); then each recipe's group runs its two
    trials, the drawn-ahead trials in the order drawn, with no build between them."""
    import optuna

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    cfg, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tiny_qa_file, study="ahead", trials=6)
    raw = yaml.safe_load(cfg.read_text())
    raw["build_budget"] = {"recipes": 3, "ahead": 2}
    raw["space"].pop("base")  # one base: every recipe swaps into the running servers
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track", "--json"])
    assert r.exit_code == 0, r.output
    assert sum("drew 2 recipe(s) ahead (trials 1, 2)" in line for line in r.output.splitlines()) == 1
    assert sum(": building" in line for line in r.output.splitlines()) == 1  # one batch
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["builds"]["recipes_built"] == 3, summary
    # the batch's building is not sweeping: trials per minute leave it out
    assert 0 < summary["build_seconds"] < summary["seconds"]
    measured = len(summary["ran"]) - len(summary["repeats"])
    assert summary["trials_per_minute"] == pytest.approx(
        measured / ((summary["seconds"] - summary["build_seconds"]) / 60), rel=0.02)
    study = optuna.load_study(study_name="ahead", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    entries = sorted((e["trial"], e["status"]) for k, e in study.user_attrs.items() if k.startswith("recipe:"))
    assert entries == [(0, "built"), (1, "built"), (2, "built")]
    assert len(list((tmp_path / "builds").glob("tiny-*/candidate.json"))) == 6
    done = sorted((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
    measured = [t for t in done if "duplicate_of" not in t.user_attrs]
    assert len(measured) == 6 and not [t for t in study.get_trials() if t.state.name in ("FAIL", "RUNNING")]
    # in the order run: trial 0's group, then the recipes drawn ahead (1, then 2), each with its group
    keys = [t.user_attrs["recipe"]["config_hash"] for t in measured]
    firsts = [t.number for i, t in enumerate(measured) if i == 0 or keys[i] != keys[i - 1]]
    assert firsts == [0, 1, 2] and len(set(keys)) == 3, [(t.number, k[:6]) for t, k in zip(measured, keys)]
    assert all(study.get_trials()[n].user_attrs.get("drawn_ahead") for n in (1, 2))
    m = {t.number: t.user_attrs["metrics"] for t in measured}
    assert m[0]["build_seconds"] > 0 and m[1]["build_seconds"] < 0.5 * m[0]["build_seconds"]  # built already
    swapped = [n for n in (1, 2) if "weights_swap_seconds" in m[n]]
    assert swapped == [1, 2]  # one base: each recipe drawn ahead went into the running servers


def _probe_bench(tmp_path, small, large, monkeypatch):
    """A recipe book on two bases with `build_workers: auto`, and a study to draw from, on a CPU
    made to look like an 80 GB GPU: its reading and the builds' peak RSS stand in for the GPU's
    memory. Returns (candidates, draw, refit rows): `draw(base, method, rank, lr)` -> a recipe key."""
    import optuna

    from tournament.study.config import parse_sweep_config
    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import RecipeBook
    from tournament.train import memory

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    monkeypatch.setattr(memory, "gpu_memory_bytes", lambda gpu=0, field="free": 80 * 2**30)
    monkeypatch.setattr(memory, "gpu_peak_bytes", lambda doc: ((doc.get("train") or {}).get("peak_memory") or {}
                                                              ).get("bytes"))
    cfg_path, refit_data = _sweep_file(tmp_path, small, large, tmp_path / "eval.jsonl")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["build_workers"] = "auto"
    cfg = parse_sweep_config(raw)
    candidates = resolve_candidates(cfg)
    book = RecipeBook(cfg, candidates, builds_dir=tmp_path / "builds", echo=lambda s: None)
    study = optuna.create_study(directions=["maximize", "maximize"])

    def draw(base: str, method: str, rank: int, lr: float) -> str:
        study.enqueue_trial({"base": base, "recipe.method": method, "recipe.rank": rank, "recipe.learning_rate": lr})
        return book.draw_key(study.ask(), "tiny", None)

    return candidates, draw, refit_data


def test_a_kind_of_build_no_build_measured_trains_alone_before_the_batch(tmp_path, tiny_model_dir, monkeypatch):
    """`build_workers: auto` on a GPU plans side-by-side builds with measured peaks; a batch with a
    kind of build (base, method, batch, length) that no earlier build measured first trains its
    shortest build of that kind alone. A full fine-tune's peak covers a LoRA build of the same
    kind, so a batch of one full and one LoRA recipe needs one probe, the full one. Real builds
    on this CPU; the GPU's reading and the builds' peak RSS stand in for a GPU's memory."""
    from tournament.study.recipe_builds import train_recipes

    candidates, draw, _ = _probe_bench(tmp_path, tiny_model_dir, tiny_model_dir, monkeypatch)
    keys = [draw("small", method, 4, 5e-4) for method in ("lora", "full")]
    lines: list[str] = []
    errors, built_once = train_recipes(candidates, keys, "auto", True, lines.append)
    assert errors == {} and built_once
    probes = [line for line in lines if "trains alone first" in line]
    started = [line for line in lines if "in a child process" in line]
    assert len(probes) == 1 and f"[{candidates[keys[1]].id}/honest]" in probes[0]  # the full recipe's short build
    assert len(started) == 4 and started[0].startswith(f"  [{candidates[keys[1]].id}/honest]")
    lines.clear()  # measured now: a second batch of both kinds trains without a probe
    keys += [draw("small", method, 8, 3e-4) for method in ("lora", "full")]
    errors, _ = train_recipes(candidates, keys[2:], "auto", True, lines.append)
    assert errors == {} and not [line for line in lines if "trains alone first" in line]
    assert sum("in a child process" in line for line in lines) == 4


def test_probes_of_several_unmeasured_kinds_train_side_by_side(tmp_path, tiny_model_dir, monkeypatch):
    """A batch with several kinds no build has measured probes them at once, each on 1/N of the
    card (three probes alone took 186 s of an H100 batch, 2026-12-08): here a full recipe on each
    of two bases of different size. A LoRA recipe on one of them needs no probe of its own (the
    full probe's peak covers it). Then the batch is planned from the two measured peaks, with no
    probe alone. Real builds on this CPU; the GPU's reading and the builds' peak RSS stand in."""
    from tournament.models.tiny import build_tiny_model
    from tournament.study.recipe_builds import train_recipes

    large = build_tiny_model(tmp_path / "large", hidden_size=96, num_layers=3)
    candidates, draw, refit_data = _probe_bench(tmp_path, tiny_model_dir, large, monkeypatch)
    keys = [draw(base, method, 4, 5e-4) for base, method in (("small", "full"), ("large", "full"), ("large", "lora"))]
    lines: list[str] = []
    errors, _ = train_recipes(candidates, keys, "auto", True, lines.append)
    assert errors == {}, errors
    probes = [line for line in lines if "trains first, beside 1 other probe(s)" in line]
    assert sorted(line.split("]")[0] for line in probes) == sorted(f"  [{candidates[k].id}/honest" for k in keys[:2])
    assert not [line for line in lines if "trains alone first" in line]
    assert sum("in a child process" in line for line in lines) == 6
    # the two probes were told they shared the card (each child's candidate.json records it)
    trained = [json.loads(f.read_text()) for f in (tmp_path / "builds").glob("*/candidate.json")]
    honest = {d["id"]: d["train"]["builds_at_once"] for d in trained
              if Path(d["candidate"]["recipe"]["dataset"]).resolve() != refit_data.resolve()}
    assert {candidates[k].id: 2 for k in keys[:2]}.items() <= honest.items(), honest


def test_a_probe_that_fails_beside_others_is_tried_once_more_alone(tmp_path, tiny_model_dir, monkeypatch):
    """Side by side, a probe may fail for its neighbours' sake (their memory); it trains once more
    alone before its recipe counts as failed, and the batch goes on."""
    from tournament.models.tiny import build_tiny_model
    from tournament.study import inputs
    from tournament.study.recipe_builds import train_recipes

    large = build_tiny_model(tmp_path / "large", hidden_size=96, num_layers=3)
    candidates, draw, _ = _probe_bench(tmp_path, tiny_model_dir, large, monkeypatch)
    keys = [draw(base, "full", 4, 5e-4) for base in ("small", "large")]
    flaky = candidates[keys[0]].builds["honest"]
    real, calls = inputs.Build.model_dir, []

    def model_dir(self, *a, **k):
        if self is flaky and not calls:
            calls.append(1)
            raise RuntimeError("CUDA out of memory (beside the other probe)")
        return real(self, *a, **k)

    monkeypatch.setattr(inputs.Build, "model_dir", model_dir)
    lines: list[str] = []
    errors, _ = train_recipes(candidates, keys, "auto", True, lines.append)
    assert errors == {} and calls == [1], errors
    name = f"[{candidates[keys[0]].id}/honest]"
    assert any(name in line and "failed beside the other probes (RuntimeError): trains alone" in line for line in lines)
    assert any(name in line and "trains alone first" in line for line in lines)
    assert flaky.built_dir is not None and all(b.built_dir for k in keys for b in candidates[k].builds.values())


def test_a_recipe_out_of_gpu_memory_beside_others_trains_again_with_fewer_beside_it(tmp_path, tiny_model_dir,
                                                                                  monkeypatch):
    """A batch planned with a peak measured on shorter rows (a probe trains the honest split; the
    refit split's longest batch reserved 1.3x more on an H100) may not hold its builds: a recipe
    whose build ran out of GPU memory beside others trains again in a narrower round (only its
    builds not built yet count), and its builds are kept. A build that failed otherwise fails its
    recipe, once. The scheduler is under test: each "build" only takes time (real builds: above)."""
    import os
    import time

    from tournament.study import inputs
    from tournament.study.recipe_builds import train_recipes
    from tournament.train.memory import AT_ONCE_ENV

    candidates, draw, _ = _probe_bench(tmp_path, tiny_model_dir, tiny_model_dir, monkeypatch)
    keys = [draw("small", "full", 4, lr) for lr in (5e-4, 3e-4)]
    short, bad = candidates[keys[0]].builds["refit"], candidates[keys[1]].builds["refit"]
    calls, widths = {"short": 0, "bad": 0}, []

    def model_dir(self, *a, **k):
        if self is short:
            widths.append(int(os.environ.get(AT_ONCE_ENV, "1")))  # builds at once, as its child is told
        time.sleep(0.3)  # every build of the round has started before one fails
        if self is short and not calls["short"]:
            calls["short"] += 1
            raise RuntimeError("building it failed in its child process (exit 1):\ntorch.OutOfMemoryError: "
                               "CUDA out of memory. Tried to allocate 3.00 GiB")
        if self is bad:
            calls["bad"] += 1
            raise ValueError("a recipe that cannot train")
        self._dir = tmp_path / "built" / self.config_hash
        return self._dir

    monkeypatch.setattr(inputs.Build, "model_dir", model_dir)
    lines: list[str] = []
    errors, _ = train_recipes(candidates, keys, 4, True, lines.append)
    assert list(errors) == [keys[1]] and isinstance(errors[keys[1]], ValueError) and calls["bad"] == 1, errors
    retried = [line for line in lines if "ran out of GPU memory in a round of 4 builds" in line]
    assert len(retried) == 1 and f"[{candidates[keys[0]].id}]" in retried[0], lines
    assert all(b.built_dir for b in candidates[keys[0]].builds.values())
    assert widths == [4, 1], widths  # its honest build finished in the first round: the refit alone


def test_a_probe_that_had_to_turn_the_fused_loss_on_beside_others_is_probed_again_alone(tmp_path, tiny_model_dir,
                                                                                     monkeypatch):
    """A probe beside others that found too little memory for its estimate turned Liger's fused
    loss on (its candidate.json says so, as a GPU child's does): its peak is no measurement of a
    build without it, so its kind trains its next build alone first, before the batch is planned."""
    from tournament.models.tiny import build_tiny_model
    from tournament.study import inputs
    from tournament.study.recipe_builds import train_recipes

    large = build_tiny_model(tmp_path / "large", hidden_size=96, num_layers=3)
    candidates, draw, _ = _probe_bench(tmp_path, tiny_model_dir, large, monkeypatch)
    keys = [draw(base, "full", 4, 5e-4) for base in ("small", "large")]
    fused = candidates[keys[0]].builds["honest"]
    real = inputs.Build.model_dir

    def model_dir(self, *a, **k):
        out = real(self, *a, **k)
        if self is fused:  # what a GPU child records when its share was too small for its estimate
            manifest = out.parent / "candidate.json"
            doc = json.loads(manifest.read_text())
            doc["train"]["liger_fused_loss"] = True
            manifest.write_text(json.dumps(doc))
        return out

    monkeypatch.setattr(inputs.Build, "model_dir", model_dir)
    lines: list[str] = []
    errors, _ = train_recipes(candidates, keys, "auto", True, lines.append)
    assert errors == {}, errors
    beside = [line for line in lines if "trains first, beside 1 other probe(s)" in line]
    alone = [line for line in lines if "trains alone first" in line]
    assert len(beside) == 2, lines
    assert len(alone) == 1 and alone[0].startswith(f"  [{candidates[keys[0]].id}/refit]"), alone
    assert all(b.built_dir for k in keys for b in candidates[k].builds.values())
