"""Reading a study (board, pick) never creates a store and names what exists; the plots module.

Studies here are real Optuna sqlite stores with trials shaped as the sweep records them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tournament.cli import app

runner = CliRunner()


def make_study(runs: Path, name: str, specs, pass_mark: float = 0.35) -> str:
    """specs: (candidate, build or None, accuracy, chars/s) per COMPLETE trial."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    runs.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{runs / 'optuna.db'}"
    st = optuna.create_study(study_name=name, storage=url, directions=["maximize", "maximize"])
    st.set_user_attr("judge", {"track": "basic", "pass_mark": pass_mark})
    cands = sorted({s[0] for s in specs})
    for cand, build, acc, speed in specs:
        t = optuna.trial.create_trial(
            params={"candidate": cand}, distributions={"candidate": CategoricalDistribution(cands)},
            values=[acc, speed],
            user_attrs={"candidate": {"id": cand, **({"build": build} if build else {})},
                        "metrics": {"accuracy": acc, "chars_per_s": speed, "accuracy_stderr": 0.02},
                        "serve_config": {"decode": {"max_tokens": 32}, "mode": "batch"}})
        for k, v in {"accuracy": pass_mark - acc, "predict_time": -1.0, "health": -1.0}.items():
            t.set_constraint(k, v)
        st.add_trial(t)
    return url


DEMO_LIKE = [("gemma-3-270m-base", None, a, s) for a, s in ((0.25, 20), (0.28, 26), (0.22, 30), (0.21, 24))]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder whose only study is the demo's (runs/demo/mlruns), as after `tournament demo`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOURNAMENT_RUNS_DIR", raising=False)
    make_study(tmp_path / "runs" / "demo" / "mlruns", "demo-cpu", DEMO_LIKE)
    return tmp_path


def test_reading_never_creates_a_store(tmp_path):
    from tournament.study.board import load_study

    runs = tmp_path / "mlruns"
    with pytest.raises(LookupError, match="no study store at .*optuna.db"):
        load_study(f"sqlite:///{runs / 'optuna.db'}", None)
    assert not runs.exists()


@pytest.mark.parametrize("command", [["board"], ["pick", "--auto"]])
def test_board_and_pick_point_at_the_demo_store(elsewhere, command):
    r = runner.invoke(app, command)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "no study store at" in r.output and "tournament sweep" in r.output
    assert "--runs-dir runs/demo/mlruns" in r.output and "demo-cpu" in r.output
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "winner.json").exists()
    ok = runner.invoke(app, ["board", "--runs-dir", "runs/demo/mlruns", "--json", "--no-plots"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["study"] == "demo-cpu"


def test_an_unknown_study_is_named_with_the_ones_that_exist(elsewhere):
    make_study(elsewhere / "runs" / "demo" / "mlruns", "second", DEMO_LIKE[:1])
    for command in (["board"], ["pick", "--trial", "0"]):
        r = runner.invoke(app, [*command, "--study", "nope", "--runs-dir", "runs/demo/mlruns"])
        assert r.exit_code == 1, r.output
        assert "no study 'nope'" in r.output and "demo-cpu, second" in r.output
        assert "Record does not exist" not in r.output


def test_demo_prints_the_exact_next_commands():
    from tournament.study.demo import next_commands

    text = next_commands(Path("runs/demo/mlruns"), "demo-cpu", Path("runs/demo/winner.json"))
    assert "tournament board --runs-dir runs/demo/mlruns --study demo-cpu" in text
    assert "tournament pick --auto --runs-dir runs/demo/mlruns --study demo-cpu" in text
    assert "tournament serve --winner runs/demo/winner.json" in text
    assert "tournament ui --runs-dir runs/demo/mlruns" in text


def _data(tmp_path, specs, name="s"):
    from tournament.study.board import board_records

    return board_records(make_study(tmp_path / "mlruns", name, specs), name, None)


def test_plots_colour_by_candidate_and_build_and_mark_a_front_without_feasible_trials(tmp_path):
    from tournament.study import plots

    data = _data(tmp_path, [("lora", "docx", 0.40, 900), ("lora", "refit", 0.45, 800), ("base", None, 0.30, 2000),
                            ("lora", "docx", 0.38, 700)])
    rows = plots.finished(data)
    assert sorted({plots.series(r) for r in rows}) == ["base", "lora · docx", "lora · refit"]
    front, what = plots.front(rows)
    assert [r["trial"] for r in front] == [1, 0] and "feasible" in what  # trial 2 is infeasible, 3 dominated
    none = _data(tmp_path / "none", DEMO_LIKE)
    front, what = plots.front(plots.finished(none))
    assert [r["trial"] for r in front] == [1, 2] and "none feasible" in what  # (26, 0.28), (30, 0.22)


def test_plots_files_are_self_contained(tmp_path):
    from tournament.study.plots import write_plots

    paths = write_plots(_data(tmp_path, DEMO_LIKE), tmp_path / "out")
    assert [p.name for p in paths] == ["pareto.png", "pareto.html"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths[1].read_text(encoding="utf-8")
    assert "<script src=" not in html and "cdn.plot.ly/plotly" not in html  # works offline
    assert "plotly.js v" in html and "#1" in html  # the script itself, and the front's labels
