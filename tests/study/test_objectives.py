"""One list of objectives: a third objective in a real sweep reaches Optuna, the board's front,
its table and the pick; resuming a study with other objectives is an error."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tournament.cli import app
from tournament.study.objectives import DEFAULT_OBJECTIVES, Objective, pareto_front
from tournament.study.record import TrialRecord

runner = CliRunner()
HEALTH = Objective(name="health", metric="health_seconds", direction="minimize")
THREE = [*DEFAULT_OBJECTIVES, HEALTH]


def _rec(n, acc, speed, health, sc=None):
    return TrialRecord(trial=n, feasible=True, accuracy=acc, predicted_accuracy=acc, predicted_accuracy_sd=0.01,
                       chars_per_s=speed, health_seconds=health, serve_config=sc or {})


def test_a_third_objective_widens_the_front():
    a, b, c = _rec(0, 0.5, 1000, 60.0), _rec(1, 0.5, 900, 20.0), _rec(2, 0.4, 800, 90.0)
    assert pareto_front([a, b, c], DEFAULT_OBJECTIVES) == {0}  # b is dominated on two axes
    assert pareto_front([a, b, c], THREE) == {0, 1}  # ... but starts fastest: on the 3-D front
    assert pareto_front([a, c], [DEFAULT_OBJECTIVES[0], HEALTH]) == {0}  # minimise: 60 s beats 90 s


def test_the_pick_breaks_speed_ties_by_a_third_objective_before_simplicity():
    from tournament.study.winner import auto_pick

    fancy = {"decode": {"max_tokens": 100, "repetition_penalty": 1.1}}
    quick_fancy, slow_plain = _rec(0, 0.5, 10000, 20.0, fancy), _rec(1, 0.5, 9950, 80.0, {})
    n, rule = auto_pick([quick_fancy, slow_plain], 0.35)
    assert n == 1 and "simplest" in rule  # two objectives: the near-tie goes to the simpler config
    n, rule = auto_pick([quick_fancy, slow_plain], 0.35, objectives=THREE)
    assert n == 0 and "the best health" in rule  # three: the faster start wins the tie first


def _sweep_file(tmp_path, model, qa, objectives, study="obj"):
    doc = {
        "study": study, "trials": 3, "decode_trials_per_engine": 3,
        "candidates": [{"id": "tiny", "model_path": str(model),
                        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
        "eval": {"path": str(qa), "limit": 4},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
        "space": {"decode": {"max_tokens": [4, 8, 12]}},
        "objectives": objectives,
    }
    p = tmp_path / f"{study}-{len(objectives)}.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


def test_a_sweep_with_three_objectives_reaches_optuna_the_board_and_the_pick(tmp_path, tiny_model_dir,
                                                                           tiny_qa_file, runs_dir):
    import optuna

    from tournament.study.board import board_records
    from tournament.study.objectives import stored_objectives

    three = [o.model_dump() for o in THREE]
    cfg = _sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, three)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"])
    assert r.exit_code == 0, r.output
    url = f"sqlite:///{runs_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="obj", storage=url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["accuracy", "chars_per_s", "health"]
    done = [t for t in study.trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert done and all(t.values[2] == t.user_attrs["metrics"]["health_seconds"] for t in done)

    board = board_records(url, "obj", None)
    assert [o.name for o in stored_objectives(board["objectives"])] == ["accuracy", "chars_per_s", "health"]
    feasible = [rec for rec in board["trials"] if rec.feasible and rec.duplicate_of is None]
    assert {rec.trial for rec in board["trials"] if rec.pareto} == pareto_front(feasible, THREE)

    shown = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "obj", "--no-plots"])
    assert shown.exit_code == 0 and "health" in shown.output  # the third objective has its column
    out = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "obj", "--json", "--no-plots"])
    assert [o["name"] for o in json.loads(out.stdout)["objectives"]] == ["accuracy", "chars_per_s", "health"]

    win = tmp_path / "winner.json"
    picked = runner.invoke(app, ["pick", "--auto", "--runs-dir", str(runs_dir), "--study", "obj", "--local",
                                 "--out", str(win), "--ledger", str(tmp_path / "none.json")])
    assert picked.exit_code == 0, picked.output
    assert json.loads(win.read_text())["provenance"]["trial"] in {t.number for t in done}

    # the same study with two objectives: a clear error, nothing measured
    two = _sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, [o.model_dump() for o in DEFAULT_OBJECTIVES])
    again = runner.invoke(app, ["sweep", "-c", str(two), "--runs-dir", str(runs_dir), "--no-track", "--trials", "5"])
    assert again.exit_code != 0 and "objectives" in again.output and "--study" in again.output
    assert len(optuna.load_study(study_name="obj", storage=url).trials) == len(study.trials)


@pytest.mark.parametrize("objectives, message", [
    ([{"name": "accuracy", "metric": "predicted_accuracy"}], "at least two"),
    ([{"name": "a", "metric": "predicted_accuracy"}, {"name": "a", "metric": "chars_per_s"}], "share a name"),
    ([{"name": "a", "metric": "predicted_accuracy"}, {"name": "b", "metric": "chars_per_s", "direction": "up"}],
     "direction"),
    ([{"name": "a", "metric": "predicted_accuracy"}, {"name": "b", "metric": "tokens_per_joule"}], "unknown metric"),
])
def test_bad_objectives_are_named_before_any_trial(objectives, message):
    from tournament.study.config import SweepConfigError, parse_sweep_config

    raw = {"candidates": [{"id": "x", "model_path": "m"}], "eval": {"path": "e.jsonl"}, "objectives": objectives}
    with pytest.raises(SweepConfigError, match=message):
        parse_sweep_config(raw)


def test_a_trial_line_says_which_limit_an_infeasible_trial_breaks():
    from tournament.study.objectives import violations
    from tournament.study.sweep_progress import trial_line

    broken = violations({"accuracy": 0.0771, "predict_time": -3.0, "health": 12.4})
    assert broken == ["accuracy 0.077 under the pass mark", "start 12 s over the health limit"]
    assert violations({"accuracy": 0.0, "predict_time": -1.0, "health": -50.0}) == []  # on the line: feasible
    m = {"seen_accuracy": 0.3, "unseen_accuracy": 0.2, "predicted_accuracy": 0.27, "predicted_accuracy_sd": 0.05,
         "chars_per_s": 56.0}
    line = trial_line("trial 3: gemma/-", m, broken, started=True)
    assert line.endswith("infeasible (accuracy 0.077 under the pass mark; start 12 s over the health limit) "
                         "(new servers)")
    assert trial_line("trial 4: gemma/-", m, [], started=False).endswith("chars/s=56 feasible")
