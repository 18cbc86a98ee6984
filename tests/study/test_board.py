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


def test_the_board_by_recipe_shows_each_recipe_by_its_best_trial(tmp_path):
    """`board --by-recipe` after a recipe sweep: a row per recipe with its best trial in board order,
    what the recipe is, drawn or as written, its distinct finished trials; a recipe whose build
    failed comes last with the failure; a trial drawn ahead and never run is no recipe."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    runs = tmp_path / "mlruns"
    runs.mkdir()
    url = f"sqlite:///{runs / 'optuna.db'}"
    st = optuna.create_study(study_name="r", storage=url, directions=["maximize", "maximize"])
    st.set_user_attr("judge", {"track": "basic", "pass_mark": 0.35})
    dist = {"candidate": CategoricalDistribution(["tmpl", "written"])}

    def cand(cid, template, method, rank, lr, quant="none"):
        return {"id": cid, "template": template, "drawn": {"recipe.method": method, "recipe.rank": rank},
                "config_hash": cid[-8:] * 2, "quantization": {"method": quant},
                "recipe": {"method": method, "rank": rank, "learning_rate": lr, "epochs": 2, "batch_size": 32}}

    def add(c, acc, speed, state=TrialState.COMPLETE, **attrs):
        t = optuna.trial.create_trial(
            params={"candidate": (c or {}).get("template") or "tmpl"}, distributions=dist,
            values=[acc, speed] if state == TrialState.COMPLETE else None, state=state,
            user_attrs={**({"candidate": c} if c else {}), **attrs,
                        "metrics": {"seen_accuracy": acc + 0.3, "unseen_accuracy": acc - 0.1, "accuracy": acc,
                                    "chars_per_s": speed} if state == TrialState.COMPLETE else {}})
        if state == TrialState.COMPLETE:
            for k, v in {"accuracy": 0.35 - acc, "predict_time": -1.0, "health": -1.0}.items():
                t.set_constraint(k, v)
        st.add_trial(t)

    r8 = cand("tmpl-0000aaaa", "tmpl", "lora", 8, 2e-4, "fp8")
    full = cand("tmpl-0000bbbb", "tmpl", "full", None, 5e-5)
    written = cand("written", "written", "lora", 16, 2e-4)
    add(r8, 0.36, 900)
    add(r8, 0.40, 800)  # r8's best: more accurate, both feasible
    add(full, 0.30, 1000)
    add(written, 0.38, 850)
    add(cand("tmpl-0000cccc", "tmpl", "lora", 64, 4e-4), 0, 0, TrialState.FAIL, fail_reason="build failed: OOM")
    add(None, 0, 0, TrialState.FAIL, fail_reason="drawn ahead; not run")

    from tournament.study.board import board_records
    from tournament.study.board_recipes import recipe_rows

    rows = recipe_rows(board_records(url, "r", None)["trials"])
    assert [r["recipe"] for r in rows] == ["tmpl-0000aaaa", "written", "tmpl-0000bbbb", "tmpl-0000cccc"]
    first = rows[0]
    assert (first["best_trial"], first["trials"], first["drawn_on"], first["rank"], first["quantization"]) == \
        (1, 2, "tmpl", 8, "fp8")
    assert first["feasible"] and abs(first["seen_accuracy"] - 0.70) < 1e-9
    assert rows[1]["drawn_on"] is None and rows[1]["rank"] == 16  # run as written: its template is itself
    assert not rows[2]["feasible"] and rows[2]["method"] == "full"
    assert rows[3]["best_trial"] is None and rows[3]["failure"] == "build failed: OOM"

    out = runner.invoke(app, ["board", "--by-recipe", "--runs-dir", str(runs), "--no-plots"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for text in ("tmpl-0000aaaa", "drawn", "written", "no finished trial: build failed: OOM", "4 recipes"):
        assert text in out.output, (text, out.output)
    got = runner.invoke(app, ["board", "--by-recipe", "--json", "--runs-dir", str(runs), "--no-plots"])
    doc = json.loads(got.output)
    assert "trials" not in doc and [r["recipe"] for r in doc["recipes"]] == [r["recipe"] for r in rows]

    from tournament.study.record import TrialRecord

    base = TrialRecord(trial=0, candidate="base", candidate_info={"id": "base", "recipe": {
        "method": "none", "learning_rate": 1e-4, "epochs": 1, "batch_size": 8}})
    row = recipe_rows([base])[0]  # a base model as it is: the recipe's defaults were never trained with
    assert (row["method"], row["learning_rate"], row["epochs"], row["batch_size"]) == ("none", None, None, None)
