"""The tournament's commands: sweep, board, pick, submit, judge-result, ledger, ui, demo.

Paths: ``--runs-dir`` (env ``TOURNAMENT_RUNS_DIR``, default ``mlruns``) holds ``optuna.db``,
``mlflow.db``, ``artifacts/``, ``studies/<study>/`` (trial answers, server logs, plots) and the
answer cache. ``--storage`` overrides the Optuna storage (``journal:PATH`` for N workers on one
host, ``postgresql://...`` for several hosts); ``sweep --gpus 0,1`` runs one worker per GPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tournament.judge.rules import PASS_MARK

app = typer.Typer()

RUNS_HELP = "folder for optuna.db, mlflow.db, artifacts, studies/ (env TOURNAMENT_RUNS_DIR; default mlruns)"
TRACKING_HELP = ("MLflow tracking URI, e.g. http://host:5000 for workers on several hosts (default: "
                 "$MLFLOW_TRACKING_URI, else sqlite:///<runs>/mlflow.db); sets MLFLOW_TRACKING_URI for this "
                 "command and the workers it starts")


def _tracking(uri: Optional[str]) -> None:
    """--tracking-uri is MLFLOW_TRACKING_URI, as MLflow's own clients read it: every part of the
    tool that logs or reads MLflow, and every worker process, then uses the same store."""
    if uri:
        import os

        os.environ["MLFLOW_TRACKING_URI"] = uri


def _runs(runs_dir: Optional[Path]) -> Path:
    from tournament.tracking import runs_dir_default

    return Path(runs_dir) if runs_dir else runs_dir_default()


def _storage(storage: Optional[str], runs: Path) -> str:
    from tournament.study.optuna_storage import default_storage, journal_path

    url = storage or default_storage(runs)
    try:
        journal_path(url)  # a journal URL names its file
    except ValueError as e:
        _fail(str(e), 2)
    return url


def _fail(msg: str, code: int = 1) -> None:
    typer.secho(msg, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _study_names(db: Path) -> list[str]:
    """Study names in an Optuna sqlite file, read-only (opening it through Optuna could migrate it)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return sorted(r[0] for r in con.execute("SELECT study_name FROM studies"))
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _where_else(runs: Path) -> str:
    """When the default runs folder has no study: the runs/*/mlruns folders that have one (the
    demo's is runs/demo/mlruns), as the --runs-dir to pass."""
    found = []
    for db in sorted(Path("runs").glob("*/mlruns/optuna.db")):
        if db.parent.resolve() != Path(runs).resolve() and (names := _study_names(db)):
            found.append(f"  --runs-dir {db.parent}   (holds {', '.join(names)})")
    return ("\nstudies elsewhere; pass one of:\n" + "\n".join(found)) if found else ""


def _lookup_failed(command: str, e: Exception, runs: Path, storage: Optional[str], runs_dir: Optional[Path]) -> None:
    hint = "" if storage or runs_dir else _where_else(runs)
    _fail(f"{command}: {e.args[0] if e.args else e}{hint}")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Option(Path("sweeps/demo-cpu.yaml"), "--config", "-c", help="sweep YAML"),
    trials: Optional[int] = typer.Option(None, min=1, help="finished trials the study should hold (default: the file's)"),
    study: Optional[str] = typer.Option(None, help="study name (default: the file's)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///<runs>/optuna.db; "
                                                     "journal:PATH or postgresql://... for several workers)"),
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    reuse_cached_speed: bool = typer.Option(
        False, "--reuse-cached-speed/--remeasure-speed",
        help="a configuration measured before (answer cache): reuse its stored speed too and start no server, "
             "or (default) start its server and time the speed again"),
    no_cache_speed: bool = typer.Option(False, "--no-cache-speed", hidden=True,
                                        help="old name of --reuse-cached-speed (deprecated)"),
    no_track: bool = typer.Option(False, "--no-track",
                                  help="do not log to MLflow (the study is marked untracked); without it "
                                       "a sweep whose MLflow cannot start stops before its first trial"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", hidden=True, help="old name of --no-track"),
    ledger: Path = typer.Option(Path("ledger.json"), help="ledger whose judge results calibrate the prediction"),
    gpus: Optional[str] = typer.Option(None, "--gpus",
                                       help="one worker per GPU on the shared study, e.g. 0,1 or all: builds "
                                            "first (spread over the GPUs), then the workers"),
    json_out: bool = typer.Option(False, "--json", help="print a JSON summary at the end"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1,
                                            help="seconds after which no new trial starts (the running one "
                                                 "finishes; builds count); run again to resume"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Run (or resume) an Optuna sweep: every trial is served by serve.py and judged like the judge."""
    from tournament.study import sweep_view
    from tournament.study.config import SweepConfigError, load_sweep_config
    from tournament.study.plots import write_study_plots
    from tournament.study.sweep import SweepOptions, run_sweep
    from tournament.study.sweep_progress import SweepProgress
    from tournament.tracking import TrackingError

    try:
        cfg = load_sweep_config(config)
    except SweepConfigError as e:
        _fail(str(e), 2)
    runs = _runs(runs_dir)
    _tracking(tracking_uri)
    track = not (no_track or no_mlflow)
    if no_cache_speed:  # the old name said the opposite of what it did
        typer.secho("warning: --no-cache-speed is deprecated (it reuses the cached speed); use --reuse-cached-speed",
                    fg=typer.colors.YELLOW, err=True)
        reuse_cached_speed = True
    if gpus is not None:
        _sweep_on_gpus(gpus, config, trials or cfg.trials, study or cfg.study, _storage(storage, runs), runs,
                       reuse_cached_speed, track, ledger, json_out, timeout)
        return
    opts = SweepOptions(trials=trials or cfg.trials, study=study or cfg.study, storage=_storage(storage, runs),
                        runs_dir=runs, reuse_cached_speed=reuse_cached_speed, tracking=track, ledger=ledger,
                        timeout_s=timeout, sweep_file=Path(config))
    echo = (lambda s: typer.echo(s, err=True)) if json_out else typer.echo
    try:  # the bar only on a terminal: with --json, in a pipe or a CI log, plain lines
        res = run_sweep(cfg, opts, echo=echo, progress=SweepProgress(live=False if json_out else None))
    except KeyboardInterrupt:
        typer.echo("interrupted: completed trials are stored; run the same command again to resume", err=True)
        raise typer.Exit(130)
    except (FileNotFoundError, ValueError) as e:
        _fail(f"sweep: {e}", 2)
    except TrackingError as e:
        _fail(f"sweep: {e}, or pass --no-track", 2)
    plots = write_study_plots(opts.storage, opts.study, runs, track)
    if json_out:
        typer.echo(json.dumps(sweep_view.summary(res, plots)))
    else:
        for line in sweep_view.summary_lines(res, runs_dir):
            typer.echo(line)


def _sweep_on_gpus(gpus: str, config: Path, trials: int, study: str, storage: str, runs: Path,
                   reuse_cached_speed: bool, track: bool, ledger: Path, json_out: bool,
                   timeout: float | None = None) -> None:
    from tournament.study import sweep_view
    from tournament.study.workers import (all_gpus, open_storage, parse_gpus, prebuild_on_gpus, run_workers,
                                          study_counts, summarize, worker_failures)
    from tournament.tracking import Tracker, TrackingError

    try:
        gpu_list = all_gpus() if gpus.strip() == "all" else parse_gpus(gpus)
        shared = open_storage(storage)  # a bad URL stops here, before any build
        Tracker(runs, enabled=track, required=True)  # and an MLflow that cannot start
    except ValueError as e:
        _fail(f"sweep: {e}", 2)
    except TrackingError as e:
        _fail(f"sweep: {e}, or pass --no-track", 2)
    echo = (lambda s: typer.echo(s, err=True)) if json_out else typer.echo
    echo(f"{len(gpu_list)} worker(s), GPUs {', '.join(gpu_list)}; building first")
    try:
        failed, build_s = prebuild_on_gpus(config, gpu_list, echo)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except (FileNotFoundError, ValueError) as e:
        _fail(f"sweep: {e}", 2)
    echo(f"builds ready in {build_s:.0f} s" + (f"; failed: {failed}" if failed else ""))
    args = ["--config", str(config), "--trials", str(trials), "--study", study, "--storage", storage,
            "--runs-dir", str(runs), "--ledger", str(ledger)]
    args += ["--reuse-cached-speed"] if reuse_cached_speed else []
    args += [] if track else ["--no-track"]
    if timeout is not None:  # the builds above spent part of it
        args += ["--timeout", str(max(1.0, timeout - build_s))]
    try:
        workers, sweep_s = run_workers(gpu_list, args, shared, study, echo)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed trials are stored; run the same command again to resume", err=True)
        raise typer.Exit(130)
    summary = summarize(workers, build_s, sweep_s, study_counts(shared, study))
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        for line in sweep_view.gpu_summary_lines(summary, study, storage, build_s, sweep_s):
            typer.echo(line)
    if problems := worker_failures(workers):
        _fail("\n".join(problems))


@app.command("board")
def board_cmd(
    study: Optional[str] = typer.Option(None, help="study name (default: the newest)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL"),
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    ledger: Path = typer.Option(Path("ledger.json"), help="submission ledger (for predictions, budget)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of the table"),
    plots: bool = typer.Option(True, help="write pareto.png/html next to the study"),
    limit: int = typer.Option(50, min=1, help="rows in the table"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    by_recipe: bool = typer.Option(False, "--by-recipe",
                                   help="one row per recipe: its best trial, what it is, drawn or as written"),
) -> None:
    """Leaderboard of a study: feasible first, Pareto front marked, predicted judge scores."""
    from tournament.study import ledger as submissions
    from tournament.study.board import as_json, board_records, render
    from tournament.study.board_recipes import recipe_rows, render_recipes
    from tournament.study.plots import write_study_plots

    runs = _runs(runs_dir)
    _tracking(tracking_uri)
    st = _storage(storage, runs)
    try:
        data = board_records(st, study, ledger)
    except LookupError as e:
        _lookup_failed("board", e, runs, storage, runs_dir)
    except submissions.LedgerError as e:
        _fail(f"board: {e}")
    if plots:  # an untracked study gets no MLflow run from the board either
        data["plots"] = [str(p) for p in write_study_plots(st, data["study"], runs, data.get("tracked", True), data)]
    if json_out:
        out = as_json(data)
        if by_recipe:
            out = {**{k: v for k, v in out.items() if k != "trials"}, "recipes": recipe_rows(data["trials"])}
        typer.echo(json.dumps(out, default=str))
    elif by_recipe:
        render_recipes(data)
    else:
        render(data, limit=limit)
        if data.get("plots"):
            typer.echo("plots: " + ", ".join(data["plots"]))


@app.command("pick")
def pick_cmd(
    trial: Optional[int] = typer.Option(None, help="trial number to pick"),
    auto: bool = typer.Option(False, "--auto", help="pick by the documented rule (docs/tournament.md)"),
    study: Optional[str] = typer.Option(None, help="study name (default: the newest)"),
    storage: Optional[str] = typer.Option(None),
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    out: Path = typer.Option(Path("winner.json"), help="where to write winner.json"),
    local: bool = typer.Option(False, "--local", help="keep the absolute local model path (serve here, not in the image)"),
    model_dest: str = typer.Option("models/winner", help="repo-relative path download_model.py fills"),
    margin: float = typer.Option(0.02, help="--auto: accuracy margin above the pass mark"),
    ledger: Path = typer.Option(Path("ledger.json"), help="ledger (calibration for --auto)"),
    allow_honest: bool = typer.Option(False, "--allow-honest",
                                      help="write a winner that serves the honest build of a trained recipe"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="the study's sweep file, when the one it recorded has moved "
                                               "(rebuilds a serve config whose record is masked)"),
) -> None:
    """Write winner.json (atomically) from a trial of a study.

    --auto picks by this rule (docs/tournament.md has the why):

    1. Finished feasible trials whose predicted judge accuracy - 2 sd clears
    the pass mark + --margin (the calibrated prediction once judge results exist).

    2. Of those, the fastest by noise-aware speed: median - 1.4826 MAD of the
    speed repeats; a relative spread above 10% is passed over if another will do.

    3. Trials within 1% of the fastest tie: the fewest non-default settings wins.

    4. If none clears the pass mark: the most accurate feasible trial (ties within
    0.005 go to the steadier, faster one); if none is feasible, the most accurate.

    Repeats are never picked. An honest build of a trained recipe is refused
    unless --allow-honest: the build you submit is its refit."""
    from tournament.study import ledger as submissions
    from tournament.study.board import board_records, load_study
    from tournament.study.objectives import stored_objectives
    from tournament.study.winner import auto_pick, build_winner, write_candidate_yaml, write_winner
    from tournament.study.winner_view import picked_line

    if (trial is None) == (not auto):
        _fail("give exactly one of --trial N or --auto", 2)
    runs = _runs(runs_dir)
    _tracking(tracking_uri)
    st = _storage(storage, runs)
    try:
        data = board_records(st, study, ledger)
        if auto:
            trial_n, rule = auto_pick(data["trials"], data["judge"].get("pass_mark", PASS_MARK), margin,
                                      stored_objectives(data["objectives"]))
        else:
            trial_n, rule = trial, "manual: --trial"
        doc, warns = build_winner(load_study(st, data["study"]), trial_n, rule=rule, local=local,
                                  allow_honest=allow_honest, model_dest=model_dest, sweep_file=config)
    except LookupError as e:
        _lookup_failed("pick", e, runs, storage, runs_dir)
    except submissions.LedgerError as e:
        _fail(f"pick: {e}")
    for w in warns:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    recipe_yaml = write_candidate_yaml(doc, out)  # a drawn recipe: its YAML, for `tournament train`
    write_winner(doc, out)
    typer.echo(picked_line(doc, out, data["study"], trial_n, rule))
    if recipe_yaml is not None:
        typer.echo(f"wrote {recipe_yaml}: the drawn recipe (tournament train {recipe_yaml} --dataset <refit dataset>)")
    if data.get("tracked", True):  # the trial tagged `winner` in MLflow, winner.json on the study's run
        from tournament.study.dashboard import mark_winner

        mark_winner(runs, data["study"], doc["provenance"].get("mlflow_run_id"), trial_n, out)


@app.command("submit")
def submit_cmd(
    note: str = typer.Option("", help="free text stored with the submission"),
    force: bool = typer.Option(False, "--force", help="record it even past the budget"),
    winner: Path = typer.Option(Path("winner.json")),
    ledger: Path = typer.Option(Path("ledger.json")),
    budget: Optional[int] = typer.Option(None, min=1, help="set the submission budget (default 20)"),
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Record a judge submission of winner.json in ledger.json (and MLflow); refuses past the budget."""
    from tournament.study import ledger as submissions

    _tracking(tracking_uri)
    try:
        again = submissions.same_winner(submissions.load(ledger), winner) if winner.is_file() else []
        cautions = submissions.submission_warnings(winner) if winner.is_file() else []
        e = submissions.submit(ledger, winner, note=note, force=force, budget=budget, runs_dir=_runs(runs_dir))
    except submissions.LedgerError as ex:
        _fail(f"submit: {ex}")
    for c in cautions:
        typer.secho(f"warning: {c}", fg=typer.colors.YELLOW, err=True)
    if again:
        typer.secho(f"warning: {winner} (sha256 {e['winner_sha256'][:12]}) was already submitted as "
                    f"submission {', '.join(map(str, again))}; this one spent another slot",
                    fg=typer.colors.YELLOW, err=True)
    # read back: say "recorded" only of an entry that is in the file
    doc = submissions.load(ledger)
    if e not in doc["submissions"]:
        _fail(f"submit: submission {e['id']} is not in {ledger} after writing it; nothing was recorded")
    typer.echo(f"submission {e['id']} recorded (winner sha256 {e['winner_sha256'][:12]}, commit "
               f"{str(e['git_commit'])[:12]}); {submissions.budget_line(doc, e['id'])}")


@app.command("judge-result")
def judge_result_cmd(
    submission: int = typer.Argument(..., help="submission id (see `tournament ledger`)"),
    accuracy: Optional[float] = typer.Option(None, help="accuracy the judge reported"),
    speed: Optional[float] = typer.Option(None, help="speed (chars/s) the judge reported"),
    set_: str = typer.Option("basic", "--set", help="basic | bonus"),
    note: str = typer.Option(""),
    ledger: Path = typer.Option(Path("ledger.json")),
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Record what the judge said about a submission (feeds the local->judge calibration)."""
    from tournament.study import ledger as submissions

    _tracking(tracking_uri)
    if accuracy is None and speed is None:
        _fail("give --accuracy and/or --speed", 2)
    try:
        submissions.add_result(ledger, submission, accuracy=accuracy, speed=speed, judge_set=set_, note=note,
                               runs_dir=_runs(runs_dir))
    except submissions.LedgerError as ex:
        _fail(f"judge-result: {ex}")
    from tournament.study.calibration import describe

    cal = submissions.calibration(submissions.load(ledger))
    typer.echo(f"recorded for submission {submission}" + (f"; {describe(cal)}" if cal else ""))


@app.command("ledger")
def ledger_cmd(
    ledger: Path = typer.Option(Path("ledger.json")),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """List submissions, judge results and the calibration."""
    from rich.console import Console

    from tournament.study import ledger as submissions
    from tournament.study.calibration import describe

    try:
        doc = submissions.load(ledger)
    except submissions.LedgerError as ex:
        _fail(f"ledger: {ex}")
    cal = submissions.calibration(doc)
    if json_out:
        typer.echo(json.dumps({**doc, "left": submissions.left(doc), "calibration": cal.to_dict() if cal else None}))
        return
    Console().print(submissions.listing(doc, ledger))
    if cal:
        typer.echo(describe(cal))


@app.command("ui")
def ui_cmd(
    runs_dir: Optional[Path] = typer.Option(None, help=RUNS_HELP),
    port: int = typer.Option(5000, help="MLflow UI's port"),
    host: str = typer.Option("127.0.0.1"),
    optuna_port: int = typer.Option(8080, help="optuna-dashboard's port"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///<runs>/optuna.db)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Start the MLflow UI on the tournament's store and optuna-dashboard on its Optuna storage
    (one Ctrl-C stops both). With a tracking server (http://...) only optuna-dashboard starts."""
    from tournament.study.ui import serve_dashboards

    runs = _runs(runs_dir)
    _tracking(tracking_uri)
    raise typer.Exit(serve_dashboards(runs, _storage(storage, runs), host, port, optuna_port, echo=typer.echo))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="where the demo's store and winner.json go"),
    trials: int = typer.Option(6, min=1, help="finished trials the demo's study should hold"),
    questions: int = typer.Option(12, min=1, help="held-out questions per trial"),
    config: Path = typer.Option(None, help="sweep file (default sweeps/demo-cpu.yaml)"),
    write_winner: bool = typer.Option(False, "--write-winner", help="also write ./winner.json"),
    fresh: bool = typer.Option(False, "--fresh", help="start a new study instead of resuming"),
) -> None:
    """A small real tournament on CPU: embedded gemma-3-270m, transformers engine, a few trials."""
    from tournament.study.demo import run_demo
    from tournament.tracking import TrackingError

    try:
        run_demo(out=out, trials=trials, questions=questions, config=config, write_winner=write_winner,
                 fresh=fresh, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(130)
    except TrackingError as e:
        _fail(f"demo: {e}", 2)



@app.command("speed-post")
def speed_post_cmd(
    config: Path = typer.Option(Path("sweeps/gpu-gemma.yaml"), "--config", "-c", help="sweep YAML"),
    set_: Optional[str] = typer.Option(None, "--set", help="basic | bonus (plus) (default: the file's judge.set)"),
    questions: Optional[int] = typer.Option(None, "--questions", min=1,
                                            help="questions in the POST (default: the sweep's, else the judge's count)"),
    out: Path = typer.Option(..., "--out", help="JSONL file: question, answer, kind (sample | pool)"),
) -> None:
    """Write the speed POST a sweep times: the set's public samples plus distinct questions from the
    speed pool (held out of every build), seeded. Judge a server on it with `tournament judge`."""
    from tournament.files import write_jsonl_atomic
    from tournament.study.config import SweepConfigError, load_sweep_config
    from tournament.study.inputs import speed_post

    try:
        cfg = load_sweep_config(config)
        post = speed_post(cfg, set_ or cfg.judge.set, questions)
    except (SweepConfigError, FileNotFoundError, ValueError) as e:
        _fail(f"speed-post: {e}", 2)
    kinds = {i: "sample" for i in post.sample_positions}
    write_jsonl_atomic(out, [{"question": q, "answer": a, "kind": kinds.get(i, "pool")}
                             for i, (q, a) in enumerate(zip(post.questions, post.references))])
    typer.echo(f"wrote {out}: {len(post)} questions ({len(post.sample_positions)} samples + "
               f"{len(post.pool_positions)} from the speed pool), {'all distinct' if post.distinct else 'with repeats'}")
