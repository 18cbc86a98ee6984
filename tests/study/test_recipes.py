"""A recipe space: the sweep draws recipes (base model, method, LoRA rank, learning rate) on a
template candidate, builds each drawn recipe once (refit + honest) within the build budget, reuses
the builds by config hash in later processes and workers, draws among built recipes once the
budget is spent, shows each trial's recipe on the board and in MLflow, and `pick` writes the
winning recipe's candidate YAML, which rebuilds the same config hashes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import write_training_sets
from tournament.cli import app
from tournament.study.board import recipe_cell
from tournament.study.config import SweepConfigError, parse_sweep_config

runner = CliRunner()
BUDGET = 4
# secret-looking: the study's records mask it, and pick must still write what the servers ran
PREFIX = "Key sk-RECIPE789abcdefghijklmnopq. "


def _sweep_file(tmp_path, small, large, qa, study="recipes", trials=8):
    honest, every = write_training_sets(tmp_path, 2)  # honest: without the eval questions
    template = tmp_path / "template.yaml"
    template.write_text(yaml.safe_dump({
        "id": "tiny", "base": {"path": str(small)}, "prompt": {"style": "plain", "prefix": PREFIX},
        "recipe": {"method": "lora", "dataset": str(honest), "batch_size": 16, "epochs": 1, "max_length": 96,
                   "seed": 0}}), encoding="utf-8")
    sweep = tmp_path / f"{study}.yaml"
    sweep.write_text(yaml.safe_dump({
        "study": study, "trials": trials, "decode_trials_per_engine": 2, "speed_repeats": 1,
        "start_builds_together": True, "build_workers": 2,
        "candidates": [str(template)], "eval": {"path": str(qa), "limit": 4},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
        "refit": {"dataset": str(every), "split": None},
        "build_budget": {"recipes": BUDGET},
        "space": {"engine": {"engine": "transformers", "device": "cpu", "batch_size": 4},
                  "decode": {"max_tokens": [4, 5, 6, 7]}, "mode": "batch",
                  "base": {"small": {"path": str(small)}, "large": {"path": str(large)}},
                  "recipe": {"method": ["lora", "full"], "rank": [4, 8],
                             "learning_rate": {"log": [1.0e-4, 1.0e-3]}}},
    }), encoding="utf-8")
    return sweep, every


def test_a_recipe_space_is_validated():
    base = {"candidates": ["c.yaml"], "eval": {"path": "e.jsonl"}}
    cfg = parse_sweep_config({**base, "space": {"recipe": {"rank": [8, 16], "learning_rate": {"log": [5e-5, 5e-4]}},
                                                "quantization": ["none", "fp8", {"method": "gptq"}]}})
    assert cfg.space.draws_recipes and not parse_sweep_config(base).space.draws_recipes
    for bad in ({"recipe": {"rnak": [8]}}, {"recipe": {"rank": [0, 8]}}, {"recipe": {"dataset": ["a", "b"]}},
                {"quantization": ["int3"]}, {"base": {"x": {"path": "a", "embedded": "gemma-3-270m"}}}):
        with pytest.raises(SweepConfigError):
            parse_sweep_config({**base, "space": bad})


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 8 builds in child processes and ~6 server pairs: ~6 min on a loaded 2-core machine
def test_drawn_recipes_are_built_once_within_the_budget_and_the_winner_rebuilds(
        tmp_path, tiny_model_dir, tiny_qa_file, runs_dir, monkeypatch):
    import optuna
    from mlflow.tracking import MlflowClient

    from tournament.candidates import load_candidate, with_dataset
    from tournament.models.tiny import build_tiny_model
    from tournament.train.build import ensure_built

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    large = build_tiny_model(tmp_path / "large", hidden_size=96, num_layers=3)
    cfg, refit_data = _sweep_file(tmp_path, tiny_model_dir, large, tiny_qa_file)

    # one worker: every draw is a new recipe (the learning rate is continuous) until the budget is spent
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["builds"]["recipes_built"] == BUDGET and summary["builds"]["spent"], summary
    storage = f"sqlite:///{runs_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="recipes", storage=storage)
    entries = {k: v for k, v in study.user_attrs.items() if k.startswith("recipe:")}
    assert sorted(e["status"] for e in entries.values()) == ["built"] * BUDGET
    manifests = list((tmp_path / "builds").glob("tiny-*/candidate.json"))
    assert len(manifests) == 2 * BUDGET  # each recipe built once: its refit and its honest build
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    drawn = {t.user_attrs["recipe"]["config_hash"] for t in done}
    assert len(drawn) == BUDGET
    bases = {t.params.get("base") for t in done}
    assert bases <= {"small", "large"}
    for t in done:
        rec, cand = t.user_attrs["recipe"], t.user_attrs["candidate"]
        assert rec["config_hash"] == cand["config_hash"] and rec["honest_config_hash"] == cand["honest_config_hash"]
        assert cand["config_hash"][:12] in t.user_attrs["serve_config"]["model"]["path"]  # the refit is served
        assert rec["drawn"]["recipe.method"] in ("lora", "full") and rec["train_seconds"] > 0
        assert ("recipe.rank" in t.params) == (t.params["recipe.method"] == "lora")  # rank: LoRA only
    for e in entries.values():  # the trial that trained a recipe: its training is build time, not overhead
        m = next(t for t in done if t.number == e["trial"]).user_attrs["metrics"]
        assert m["build_seconds"] >= 0.9 * e["seconds"] > 0 and m["overhead_seconds"] < m["build_seconds"]
    # a new recipe on a base whose servers run (active, or parked beside them) is swapped into them:
    # no start; a recipe on a base not served yet (another architecture) starts new servers
    lines = [line for line in r.output.splitlines() if line.startswith("trial ") and " seen=" in line]
    measured = [t for t in done if "duplicate_of" not in t.user_attrs and t.user_attrs.get("cache") != "answers+speed"]
    swapped = [t for t in measured if "weights_swap_seconds" in t.user_attrs["metrics"]]
    assert swapped and len(swapped) == sum("(weights swapped in" in line for line in lines)
    assert sum(line.startswith("weight swap checked: ") for line in r.output.splitlines()) == 1  # the first
    served: dict[str, float] = {}  # base -> its servers' time to healthy
    previous = None
    for t in measured:
        base, m = t.params.get("base"), t.user_attrs["metrics"]
        new_group = t.user_attrs["group_key"] != previous
        assert ("weights_swap_seconds" in m) == (new_group and base in served), t.number
        if base in served:
            assert m["health_seconds"] == served[base]  # the pair's start stands for the new build
        served[base], previous = m["health_seconds"], t.user_attrs["group_key"]
    # MLflow: the drawn values as params, the build as tags
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    run = client.get_run(done[0].user_attrs["mlflow_run_id"])
    assert run.data.params["recipe.method"] == done[0].params["recipe.method"]
    assert run.data.tags["recipe_hash"] == done[0].user_attrs["recipe"]["config_hash"]
    assert run.data.metrics["recipe/recipe_train_seconds"] > 0  # MLflow's grouped name (dashboard.py)

    # two more workers on the same study: the budget is spent, so they draw among the built recipes
    # (an unbuilt draw is pruned and the nearest built one enqueued) and build nothing
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                          "--trials", "12", "--runs-dir", str(runs_dir), "--no-track", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(list((tmp_path / "builds").glob("tiny-*/candidate.json"))) == 2 * BUDGET  # nothing built
    study = optuna.load_study(study_name="recipes", storage=storage)
    later = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.number not in {d.number for d in done}]
    assert later and {t.user_attrs["gpu"] for t in later} == {"0", "1"}  # both workers measured
    assert {t.user_attrs["candidate"]["config_hash"] for t in later} <= drawn  # only built recipes
    assert all(e["status"] == "built" for k, e in study.user_attrs.items() if k.startswith("recipe:"))
    pruned = [t for t in study.get_trials() if t.state.name == "PRUNED"]
    assert all("over_budget" in t.user_attrs for t in pruned)

    # the board shows each trial's recipe
    r = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "recipes", "--json", "--no-plots",
                            "--ledger", str(tmp_path / "ledger.json")])
    rows = json.loads(r.stdout)["trials"]
    assert all(row["recipe"]["config_hash"] in drawn for row in rows if row["state"] == "COMPLETE")
    r = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "recipes", "--no-plots",
                            "--ledger", str(tmp_path / "ledger.json")], env={"COLUMNS": "500"})
    assert "recipe (hash" in r.output
    row = next(row for row in rows if row["state"] == "COMPLETE")
    cell = recipe_cell(row["recipe"])  # the training's peak memory (a CPU build: its peak RSS)
    assert row["recipe"]["peak_memory_gib"] > 0
    assert cell.startswith(row["recipe"]["config_hash"][:8]) and cell.endswith(f"{row['recipe']['peak_memory_gib']:.2f}")
    assert cell in r.output

    # pick writes the drawn recipe's YAML; it rebuilds the winner's config hashes
    winner = tmp_path / "winner.json"
    r = runner.invoke(app, ["pick", "--auto", "--runs-dir", str(runs_dir), "--study", "recipes", "--local",
                            "--out", str(winner), "--ledger", str(tmp_path / "ledger.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads(winner.read_text())
    assert doc["serve"]["prompt"]["prefix"] == PREFIX  # rebuilt from the sweep file and the drawn recipe
    picked = next(t for t in study.get_trials() if t.number == doc["provenance"]["trial"])
    assert "sk-RECIPE789" not in json.dumps(picked.user_attrs["serve_config"])  # masked in the record
    cand = doc["candidate"]
    path = tmp_path / "candidates" / f"{cand['id']}.yaml"
    assert cand["source"] == str(path) and path.exists()
    c = load_candidate(path)
    assert c.config_hash() == cand["honest_config_hash"]
    refit = with_dataset(c, refit_data)
    assert refit.config_hash() == cand["config_hash"]
    assert ensure_built(refit).parent.name.endswith(cand["config_hash"][:12])  # reused: the same build


def test_draws_derive_candidates_and_the_spent_budget_redirects(tmp_path, tiny_model_dir):
    """Without training: a draw is the template with the drawn values (LoRA fields for lora only;
    on-the-fly fp8 is the same build), the budget is read from the study, an over-budget draw names
    the nearest built recipe (keeping on-the-fly fp8), and a failed recipe is not built again."""
    import optuna

    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import OverBudget, RecipeBook

    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tmp_path / "eval.jsonl")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["space"]["quantization"] = ["none", "fp8"]
    raw["build_budget"] = {"recipes": 1}
    cfg = parse_sweep_config(raw)
    candidates = resolve_candidates(cfg)
    book = RecipeBook(cfg, candidates, builds_dir=tmp_path / "builds", echo=lambda s: None)
    study = optuna.create_study(directions=["maximize", "maximize"])

    def draw(params):
        study.enqueue_trial(params)
        trial = study.ask()
        try:
            return trial, book.draw(trial, "tiny", study)
        except OverBudget as e:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return trial, e

    lora = {"base": "small", "recipe.method": "lora", "recipe.rank": 8, "recipe.learning_rate": 2e-4,
            "quantization": "none"}
    t, rc = draw(lora)
    assert rc.id.startswith("tiny-") and rc.candidate_obj.recipe.rank == 8 and rc.unseen is not None
    assert rc.info["drawn"]["recipe.rank"] == 8 and rc.info["candidate_yaml"]["recipe"]["rank"] == 8
    t2, fp8 = draw({**lora, "quantization": "fp8"})
    assert fp8.id == rc.id + "+fp8" and fp8.config_hash == rc.config_hash and fp8.engine["quantization"] == "fp8"
    t3, full = draw({**lora, "recipe.method": "full"})
    assert "recipe.rank" not in t3.params and full.config_hash != rc.config_hash
    study.set_user_attr("recipe:" + rc.config_hash[:12], {"id": rc.id, "status": "built", "seconds": 60.0,
                                                          "params": {k: t.params[k] for k in lora}})
    assert book.budget(study).spent and book.budget(study).built == 1
    _, over = draw({**lora, "recipe.method": "full", "quantization": "fp8"})
    assert isinstance(over, OverBudget) and over.redirect == {**lora, "quantization": "fp8"}
    study.set_user_attr("recipe:" + full.config_hash[:12], {"id": full.id, "status": "failed", "trial": 2,
                                                            "reason": "OOM: boom", "params": {}})
    with pytest.raises(RuntimeError, match="not retried: OOM: boom"):
        book.ensure_built(study, t3, full.id)
    assert not (tmp_path / "builds").exists()


def test_a_fresh_recipe_frees_the_gpu_before_it_trains_and_a_built_one_does_not(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    """The sweep passes `before_build` (make room: stop the running servers unless the builds fit
    beside them): called once with the number of recipes, before the first of a new recipe's
    builds starts, and not when the recipe is built already."""
    import optuna

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import RecipeBook

    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tmp_path / "eval.jsonl")
    cfg = parse_sweep_config(yaml.safe_load(cfg_path.read_text()))
    candidates = resolve_candidates(cfg)
    calls = []
    book = RecipeBook(cfg, candidates, builds_dir=tmp_path / "builds", echo=lambda s: None,
                      before_build=lambda n: calls.append((n, list((tmp_path / "builds").glob("*/model")))))
    study = optuna.create_study(directions=["maximize", "maximize"])
    lora = {"base": "small", "recipe.method": "lora", "recipe.rank": 4, "recipe.learning_rate": 5e-4}
    for _ in range(2):
        study.enqueue_trial(lora)
        trial = study.ask()
        rc = book.draw(trial, "tiny", study)
        book.ensure_built(study, trial, rc.id)
    assert calls == [(1, [])]  # once, for one recipe, and no build of it had started then
    assert len(list((tmp_path / "builds").glob("*/model"))) == 2  # its refit and honest builds


def test_the_queued_recipes_build_beside_the_first_within_the_budget(tmp_path, tiny_model_dir, monkeypatch):
    """A recipe this process trains takes the waiting trials' recipes with it (their builds share
    the build slots), as far as the budget allows; a waiting trial whose recipe is left to the
    sampler is not guessed; the queued trial then finds its recipe built."""
    import optuna

    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import RecipeBook

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tmp_path / "eval.jsonl")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["build_budget"] = {"recipes": 2}
    cfg = parse_sweep_config(raw)
    lines: list[str] = []
    book = RecipeBook(cfg, resolve_candidates(cfg), builds_dir=tmp_path / "builds", echo=lines.append)
    study = optuna.create_study(directions=["maximize", "maximize"])
    lora = {"base": "small", "recipe.method": "lora", "recipe.rank": 4, "recipe.learning_rate": 5e-4}
    study.enqueue_trial(lora)
    study.enqueue_trial({"base": "small", "recipe.method": "lora", "recipe.learning_rate": 5e-4})  # rank: sampler's
    study.enqueue_trial({**lora, "recipe.rank": 8})
    study.enqueue_trial({**lora, "recipe.method": "full"})  # past the budget of 2
    first = study.ask()
    rc = book.draw(first, "tiny", study)
    book.ensure_built(study, first, rc.id)
    entries = {e["id"]: e for k, e in study.user_attrs.items() if k.startswith("recipe:")}
    assert len(entries) == 2 and {e["status"] for e in entries.values()} == {"built"}
    queued = next(e for i, e in entries.items() if i != rc.id)
    assert queued["trial"] == 2 and queued["params"]["recipe.rank"] == 8  # the waiting trial it was built for
    assert len(list((tmp_path / "builds").glob("*/model"))) == 4  # two recipes: refit + honest each
    started = [line for line in lines if "in a child process" in line]
    assert len(started) == 4 and "/honest]" in started[0]  # the first build, alone, is a short one
    assert book.budget(study).spent
    study.tell(first, [0.5, 1.0])
    second = study.ask()  # the rank left to the sampler: drawn now, and over the budget unless it is 4 or 8
    study.tell(second, state=optuna.trial.TrialState.PRUNED)
    third = study.ask()
    assert third.number == 2
    rc3 = book.draw(third, "tiny", study)
    book.ensure_built(study, third, rc3.id)  # found built: no training, no new entry
    assert third.user_attrs["recipe"]["drawn"]["recipe.rank"] == 8 and len(
        [k for k in study.user_attrs if k.startswith("recipe:")]) == 2


def test_the_queue_taken_along_fits_the_minutes_left_and_an_interrupted_recipe_is_open_again(tmp_path,
                                                                                             tiny_model_dir):
    """Without training: how many queued recipes a fresh one takes along, at the study's mean
    minutes per recipe so far; a recipe whose batch was interrupted counts for nothing and is
    queued again."""
    import optuna

    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import RecipeBook

    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tmp_path / "eval.jsonl")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["build_budget"] = {"minutes": 20}
    book = RecipeBook(parse_sweep_config(raw), resolve_candidates(parse_sweep_config(raw)),
                      builds_dir=tmp_path / "builds", echo=lambda s: None)
    study = optuna.create_study(directions=["maximize", "maximize"])
    base = {"base": "small", "recipe.method": "lora", "recipe.learning_rate": 5e-4}
    for rank in (4, 8, 4):
        study.enqueue_trial({**base, "recipe.rank": rank})
    study.enqueue_trial({**base, "recipe.method": "full"})
    study.set_user_attr("recipe:000000000000", {"id": "x", "status": "built", "seconds": 300.0, "params": {}})
    queued = book.queued(study, "recipe:ffffffffffff")
    # 15 of 20 minutes left at 5 a recipe: the fresh one and two more; the second rank 4 is the first's recipe
    assert [number for _, number, _ in queued.values()] == [0, 1]
    attr = next(iter(queued))
    study.set_user_attr(attr, {"id": "y", "status": "interrupted", "seconds": 0.0, "params": {}})
    assert book.budget(study).built == 1 and attr in book.queued(study, "recipe:ffffffffffff")
    study.set_user_attr("recipe:111111111111", {"id": "z", "status": "built", "seconds": 600.0, "params": {}})
    assert book.queued(study, "recipe:ffffffffffff") == {}  # 5 minutes left at 7.5 a recipe: the fresh one alone



def test_no_batch_of_builds_starts_that_would_end_past_the_sweeps_timeout(tmp_path, tiny_model_dir):
    """With --timeout, a recipe that must train is not started when less time is left than the
    longest batch of builds so far took (a build that ran far past the timeout would eat the time
    after it): a sampled draw goes to the nearest built recipe, as when the budget is spent; a
    given recipe (enqueued, retried) is not swapped for another: its trial is queued again for the
    next sweep, and this one stops."""
    import time

    import optuna

    from tournament.study.inputs import resolve_candidates
    from tournament.study.recipes import OutOfTime, OverBudget, RecipeBook

    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tmp_path / "eval.jsonl")
    cfg = parse_sweep_config(yaml.safe_load(cfg_path.read_text()))
    book = RecipeBook(cfg, resolve_candidates(cfg), builds_dir=tmp_path / "builds", echo=lambda s: None)
    study = optuna.create_study(directions=["maximize", "maximize"])
    built = {"base": "small", "recipe.method": "lora", "recipe.rank": 4, "recipe.learning_rate": 5e-4}
    study.set_user_attr("recipe:000000000000", {"id": "x", "status": "built", "seconds": 75.0, "batch_seconds": 300.0,
                                                "trial": 0, "params": {"candidate": "tiny", **built}})
    fresh = {"base": "small", "recipe.method": "full", "recipe.learning_rate": 2e-4}
    book.deadline = time.monotonic() + 1000
    study.enqueue_trial(fresh)
    assert not book.budget(study).spent and book.draw(study.ask(), "tiny", study)  # 1,000 s left: it may train
    book.deadline = time.monotonic() + 100
    state = book.budget(study)
    assert state.out_of_time and state.spent and state.to_dict()["out_of_time"]
    assert "less than the longest batch of builds so far (300 s)" in state.describe()
    assert book.room(study) == 0
    with pytest.raises(OverBudget) as e:  # a sampled draw: the nearest built recipe instead
        book.draw(study.ask(), "tiny", study)
    assert e.value.redirect["recipe.rank"] == 4 and e.value.redirect["recipe.method"] == "lora"
    study.enqueue_trial(fresh)  # a given recipe is not swapped for another: it waits for the next sweep
    given = study.ask()
    with pytest.raises(OutOfTime) as late:
        book.draw(given, "tiny", study)
    assert book.postpone(study, given, late.value) == "stop"
    again = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert len(again) == 1 and again[0].user_attrs["retry_of"] == given.number
    assert again[0].system_attrs["fixed_params"]["recipe.method"] == "full"
    assert study.get_trials()[given.number].state.name == "FAIL"
    book.deadline = None  # no --timeout: the recipe budget alone (1 of 4 built)
    assert not book.budget(study).spent

def test_an_enqueued_recipe_is_the_template_as_written_unless_the_entry_names_fields(
        tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A recipe is a build and a server pair, so an enqueue entry's recipe is fixed, never left to
    the sampler: `{candidate: X}` alone is X's recipe as written, which the sweep serves as X
    itself (its id and builds: a hand-written recipe measured in the same sweep as the drawn
    ones); the fields an entry names replace the template's; a value the space cannot hold is a
    clear error."""
    from optuna.trial import TrialState

    from tournament.study.recipe_enqueue import enqueue_recipe
    from tournament.study.sweep import Sweep
    from tournament.study.sweep_result import SweepOptions

    large = tmp_path / "large"  # another base model (the template's is the small one)
    shutil.copytree(tiny_model_dir, large)
    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, large, tiny_qa_file)
    template = yaml.safe_load((tmp_path / "template.yaml").read_text())
    template["recipe"].update({"rank": 8, "learning_rate": 2e-4})  # every field inside the space
    (tmp_path / "template.yaml").write_text(yaml.safe_dump(template), encoding="utf-8")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["space"]["quantization"] = ["none", "fp8"]
    named = {"candidate": "tiny", "recipe": {"method": "full", "learning_rate": 5e-4}, "quantization": "fp8",
             "base": "large", "decode": {"max_tokens": 5}}
    raw["enqueue"] = [{"candidate": "tiny", "decode": {"max_tokens": 4}}, named]
    cfg = parse_sweep_config(raw)
    sweep = Sweep(cfg, SweepOptions(trials=2, study="enq", storage=f"sqlite:///{runs_dir / 'optuna.db'}",
                                    runs_dir=runs_dir, tracking=False), echo=lambda s: None)
    study = sweep._study()
    fixed = sorted((t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))),
                   key=lambda p: p["decode.max_tokens"])
    assert fixed == [
        {"candidate": "tiny", "decode.max_tokens": 4, "base": "small", "recipe.method": "lora", "recipe.rank": 8,
         "recipe.learning_rate": 2e-4, "quantization": "none"},
        {"candidate": "tiny", "decode.max_tokens": 5, "base": "large", "recipe.method": "full",
         "recipe.learning_rate": 5e-4, "quantization": "fp8"}]

    # the sweep's draw of the first entry is the template itself: the same config hash, so the
    # hand-written recipe and the drawn ones sit in one study and one board
    drawn = {}
    for _ in fixed:
        trial = study.ask()
        rc = sweep.recipes.draw(trial, "tiny", None)
        drawn[trial.params["recipe.method"]] = rc
    tpl = sweep.templates["tiny"]
    assert drawn["lora"] is tpl and tpl.id == "tiny"  # its id and builds: `tournament train` shares them
    assert "candidate_yaml" not in tpl.info  # pick names the template's own YAML, never writes a copy
    assert drawn["full"].id == drawn["full"].info["candidate_yaml"]["id"] + "+fp8"  # a drawn recipe: its own YAML
    full = drawn["full"].candidate_obj
    assert full.recipe.method == "full" and full.recipe.learning_rate == 5e-4 and full.base.path == str(large)
    assert drawn["full"].engine.get("quantization") == "fp8" and drawn["full"].config_hash != tpl.config_hash

    # values the space cannot hold, when the entry names them, stop the sweep with the reason
    for bad, match in (({"recipe": {"rank": 7}}, r"recipe.rank=7 is not one of the space's choices"),
                       ({"recipe": {"learning_rate": 0.5}}, r"outside the space's range"),
                       ({"recipe": {"epochs": 2}}, r"not in space.recipe"),
                       ({"quantization": "int3"}, r"quantization='int3' is not one of"),
                       ({"base": "huge"}, r"base 'huge' is not one of space.base")):
        with pytest.raises(ValueError, match=match):
            enqueue_recipe({"candidate": "tiny", **bad}, cfg, sweep.candidates, "tiny")
    with pytest.raises(ValueError, match="but the sweep fixes it"):
        fixed_lr = parse_sweep_config({**raw, "space": {**raw["space"], "recipe": {**raw["space"]["recipe"],
                                                                                   "learning_rate": 2e-4}}})
        enqueue_recipe({"candidate": "tiny", "recipe": {"learning_rate": 1e-3}}, fixed_lr, sweep.candidates, "tiny")

    # the template's build served another way (its on-the-fly fp8 drawn off) is not the template
    tpl_fp8 = sweep.recipes.derive(tpl, {"base": "small", "recipe.method": "lora", "recipe.rank": 8,
                                         "recipe.learning_rate": 2e-4, "quantization": "fp8"})
    assert tpl_fp8 == "tiny+fp8" and sweep.candidates[tpl_fp8].engine.get("quantization") == "fp8"
    assert sweep.candidates[tpl_fp8].config_hash == tpl.config_hash  # one build, served two ways

    plain = parse_sweep_config({k: v for k, v in raw.items() if k not in ("enqueue",)}
                               | {"space": {**raw["space"], "recipe": {}, "quantization": None, "base": None}})
    with pytest.raises(ValueError, match="need a recipe space"):
        enqueue_recipe({"recipe": {"rank": 8}}, plain, sweep.candidates, "tiny")


def test_the_sampler_draws_on_its_template_while_hand_written_recipes_run_as_enqueued(
        tmp_path, tiny_model_dir, tiny_qa_file, runs_dir, monkeypatch):
    """`space.candidate` names the template the sampler draws recipes on; `enqueue` may name other
    listed candidates (hand-written recipes, as written: their own batch size) which the sampler
    never draws. Such a group takes only the trials enqueued for it, and the drawn trials after it
    are drawn on the sampler's template. The hand-written recipe that trains first takes one draw
    ahead along (the enqueued trial still waiting is taken first and runs first): one batch of
    builds, then the drawn recipe's group."""
    import optuna

    monkeypatch.chdir(tmp_path)
    cfg_path, _ = _sweep_file(tmp_path, tiny_model_dir, tiny_model_dir, tiny_qa_file, study="named", trials=5)
    written = yaml.safe_load((tmp_path / "template.yaml").read_text())
    written.update({"id": "written"})
    written["recipe"].update({"rank": 8, "learning_rate": 2e-4, "batch_size": 8})  # outside nothing but the batch
    (tmp_path / "written.yaml").write_text(yaml.safe_dump(written), encoding="utf-8")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["candidates"].append(str(tmp_path / "written.yaml"))
    raw["space"]["candidate"] = ["tiny"]
    raw["space"].pop("base")
    raw["enqueue"] = [{"candidate": "written", "decode": {"max_tokens": 4}},
                      {"candidate": "written", "decode": {"max_tokens": 5}}]
    raw["decode_trials_per_engine"] = 3
    raw["build_budget"] = {"recipes": 4, "ahead": 1}
    cfg_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    r = runner.invoke(app, ["sweep", "-c", str(cfg_path), "--runs-dir", str(runs_dir), "--no-track", "--json"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="named", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    done = sorted((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
    done = [t for t in done if "duplicate_of" not in t.user_attrs]  # in the order run, repeats aside
    ids = [t.user_attrs["candidate"]["id"] for t in done]
    assert ids[:2] == ["written", "written"] and "candidate" not in done[0].params
    assert done[0].user_attrs["group_key"] == done[1].user_attrs["group_key"]  # one group, one build
    assert all(i.startswith("tiny") for i in ids[2:]) and len(ids) == 5  # then drawn on the template
    # trial 0 trains "written" with trial 2's recipe, drawn ahead after the queued trial 1; trial 1
    # runs next (no build), then trial 2, whose group goes on with trials 3 and 4 (no build either)
    assert [t.number for t in done][:3] == [0, 1, 2], [(t.number, t.state.name, t.user_attrs) for t in study.get_trials()]
    assert all(done[n].user_attrs.get("drawn_ahead") for n in (1, 2))
    assert done[2].user_attrs["group_key"] == done[3].user_attrs["group_key"] == done[4].user_attrs["group_key"]
    built = sorted(e["trial"] for k, e in study.user_attrs.items() if k.startswith("recipe:") and e["status"] == "built")
    assert built == [0, 2] and sum(": building" in line for line in r.output.splitlines()) == 1
    assert "drew 2 recipe(s) ahead (trials 1, 2)" in r.output
    manifest = next((tmp_path / "builds").glob("written-*/candidate.json"))
    assert json.loads(manifest.read_text())["candidate"]["recipe"]["batch_size"] == 8  # as written
