"""Measuring one trial the way the judge would, on the build that ships.

Per judge set of the sweep (the track's set first), on the running servers:

- the **ship** server (the refit build, or a single build) answers the set's questions, scored
  (seen accuracy). On the track's set, when the sweep has a speed pool, its questions are part of
  the **speed POST** (workload.py: the samples plus distinct unseen questions, the judge's count):
  that POST runs ``speed_repeats`` times for chars/s, its first run's sample answers are the seen
  accuracy, and one more POST of the samples cycled to the same count gives ``chars_per_s_cycled``.
  Without a pool the set's questions alone are the speed POST, ``speed_repeats`` times;
- the **unseen** server (the honest build of a trained recipe) answers the same questions once,
  scored (unseen accuracy). Its time never enters chars/s. A single build's seen and unseen
  accuracy are the same run.

Before every timed POST (the speed POSTs and the cycled one) the server's prefix cache is emptied
(``POST /admin/reset_prefix_cache``, sweep mode only), so each is timed as the judge's fresh server
would answer it: on an H100 a refit served fresh from its winner.json gave 16,903 chars/s on the
distinct basic POST where the sweep, timing the same POST again on a warm prefix cache, had
measured 22,277. The POSTs only scored (the honest build's, the ship's on the other sets) keep
the cache: their time is not used, a cache hit reuses the KV of the same tokens (greedy answers
stay as they are), and each reset walks vLLM's whole KV cache in Python: 55-70 ms on one H100 at
``gpu_memory_utilization`` 0.5, half of a decode-only trial's overhead (2026-12-07). So a reset
starts as early as it safely can, in the background (``PrefixResets``): the ship server's first
one while the honest build answers on its own server, each later one as soon as the previous
timed POST's answers are in (while they are scored). The timed POST waits for it: the server has
answered nothing between its reset and that POST, so the POST is timed exactly as before.

Then the judge model turns seen and unseen into a predicted judge accuracy with an sd. Speed is
the median of the repeats; its noise is the MAD (scaled by 1.4826 to match an sd): the noise-aware
speed is ``median - 1.4826 MAD`` and the relative spread ``1.4826 MAD / median``.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tournament.judge.rules import judge_set, row_in_set
from tournament.serving.process import reset_prefix_cache
from tournament.study.judge_model import JudgeModel
from tournament.study.workload import SpeedPlan, cycled

MAD_TO_SD = 1.4826


@dataclass
class Measurement:
    metrics: dict[str, Any]
    # the ship build's answers to every measured question, in eval order (for the answer table)
    questions: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    unseen_answers: list[str] = field(default_factory=list)
    unseen_scores: list[float] = field(default_factory=list)
    # the speed POST (the track's set) as sent, and the first run's answers
    speed_questions: list[str] = field(default_factory=list)
    speed_answers: list[str] = field(default_factory=list)


def set_indices(labels: Sequence[str | None], sets: Sequence[str], track: str) -> dict[str, list[int]]:
    """The eval rows of each judge set. Rows without a set label belong to the track's set."""
    out = {}
    for s in sets:
        s = judge_set(s)
        out[s] = [i for i, lab in enumerate(labels) if row_in_set(lab, s) or (lab is None and s == judge_set(track))]
    return out


def speed_stats(speeds: Sequence[float]) -> dict[str, float]:
    med = statistics.median(speeds)
    mad = MAD_TO_SD * statistics.median(abs(x - med) for x in speeds) if len(speeds) > 1 else 0.0
    return {"chars_per_s": med, "chars_per_s_min": min(speeds), "chars_per_s_max": max(speeds),
            "chars_per_s_std": statistics.pstdev(speeds) if len(speeds) > 1 else 0.0,
            "chars_per_s_mad": mad, "chars_per_s_score": med - mad,
            "chars_per_s_rel_spread": mad / med if med > 0 else 0.0}


@dataclass
class _Part:
    """The answers of some positions of a judged POST, with their accuracy."""

    answers: list[str]
    scores: list[float]
    zh_rougeL: float | None

    @property
    def accuracy(self) -> float:
        return statistics.mean(self.scores) if self.scores else 0.0


def _part(report, references: Sequence[str], positions: Sequence[int]) -> _Part:
    """The samples' (or the pool's) part of one scored POST."""
    from tournament.judge.scoring import zh_rougeL

    answers = [report.answers[i] for i in positions]
    refs = [references[i] for i in positions]
    return _Part(answers, [report.scores[i] for i in positions], zh_rougeL(answers, refs) if refs else None)


def _accuracy(report) -> tuple[float, float]:
    """(accuracy, its standard error over the questions)."""
    n = len(report.scores)
    if n < 2:
        return report.accuracy, 0.5
    return report.accuracy, statistics.pstdev(report.scores) / n ** 0.5


class PrefixResets:
    """Prefix-cache resets started early, in the background, and waited for just before the timed
    POST they are for. `start(url)` must be followed by `wait(url)` before anything else is sent
    to that server; `wait` without a start resets there and then. `reset` is the call itself
    (serve.py's admin endpoint: it runs on the server's generation thread, so never while a batch
    runs). `seconds` sums how long the resets themselves took, hidden or not; `early` counts the
    resets that had started before the POST needed them."""

    def __init__(self, reset: Callable[[str], None] = reset_prefix_cache):
        self._reset = reset
        self._pending: dict[str, tuple[threading.Thread, list]] = {}
        self.seconds = 0.0
        self.count = 0
        self.early = 0

    def _timed_reset(self, url: str, outcome: list) -> None:
        t0 = time.perf_counter()
        try:
            self._reset(url)
        except Exception as e:  # raised by wait(), in the trial's thread
            outcome.append(e)
        self.seconds += time.perf_counter() - t0
        self.count += 1

    def start(self, url: str) -> None:
        if url in self._pending:
            return
        outcome: list = []
        t = threading.Thread(target=self._timed_reset, args=(url, outcome), daemon=True, name="prefix-reset")
        self._pending[url] = (t, outcome)
        t.start()

    def wait(self, url: str) -> None:
        """Returns once `url`'s prefix cache has been emptied (since its last POST)."""
        if url in self._pending:
            self.early += 1
        else:
            self.start(url)
        t, outcome = self._pending.pop(url)
        t.join()
        if outcome:
            raise outcome[0]


def measure(ship_url: str, unseen_url: str | None, questions: Sequence[str], references: Sequence[str],
            labels: Sequence[str | None], *, sets: Sequence[str], track: str, speed_repeats: int,
            judge_model: JudgeModel, health_timeout: float, predict_timeout: float,
            health_seconds: float | None, speed: SpeedPlan | None = None) -> Measurement:
    from tournament.judge.emulator import judge

    # where a trial's time outside the POSTs goes (decode-only trial overhead, docs/tournament.md):
    # the resets count only as long as the trial waited for them
    outside = {"overhead_reset_seconds": 0.0, "overhead_judge_seconds": 0.0}
    resets = PrefixResets()

    def run(url, qs, refs, score, timed=False, timed_next=False):
        """One judged POST; `timed`: as a fresh server would answer it (nothing of an earlier POST
        cached); `timed_next`: the next POST to `url` is timed too, so its reset starts as soon
        as these answers are in."""
        t0 = time.perf_counter()
        if timed:
            resets.wait(url)
        t1 = time.perf_counter()
        rep = judge(url, qs, refs, health_timeout=health_timeout, predict_timeout=predict_timeout,
                    poll=0.05, score=score, after_post=(lambda: resets.start(url)) if timed_next else None)
        outside["overhead_reset_seconds"] += t1 - t0
        outside["overhead_judge_seconds"] += max(0.0, time.perf_counter() - t1 - rep.predict_seconds)
        if rep.failed:
            raise RuntimeError(f"judge run failed ({url}): {rep.reason}")
        return rep

    track = judge_set(track)
    idx = set_indices(labels, sets, track)
    empty = [s for s, rows in idx.items() if not rows]
    if empty:
        raise ValueError(f"the eval questions hold no row of judge set(s) {empty}: give an eval file with them, "
                         f"or drop them from judge.sets")
    m: dict[str, Any] = {}
    out = Measurement(m)
    predict_total = 0.0
    for s, rows in idx.items():
        qs, refs = [questions[i] for i in rows], [references[i] for i in rows]
        workload = speed.workload(qs, refs) if speed is not None and s == track else None
        cycled_post = workload is not None and speed.cycled
        if s == track and unseen_url:  # the ship's first reset while the honest build answers
            resets.start(ship_url)
        unseen_rep = run(unseen_url, qs, refs, True) if unseen_url else None
        # Only the first ship run is scored: greedy repeats answer alike, and scoring is CPU time
        # that would count as decode-only trial overhead.
        if workload is not None:
            speed_reports = [run(ship_url, workload.questions, workload.references, i == 0, timed=True,
                                 timed_next=i < speed_repeats - 1 or cycled_post)
                             for i in range(speed_repeats)]
            first = _part(speed_reports[0], workload.references, workload.sample_positions)
            reports = [first]
            predict_total += sum(r.predict_seconds for r in speed_reports)
        else:
            n_runs = speed_repeats if s == track else 1
            reports = speed_reports = [run(ship_url, qs, refs, i == 0, timed=s == track,
                                           timed_next=s == track and i < n_runs - 1) for i in range(n_runs)]
            predict_total += sum(r.predict_seconds for r in reports)
        predict_total += unseen_rep.predict_seconds if unseen_rep else 0.0
        seen, seen_se = _accuracy(reports[0])
        unseen, unseen_se = _accuracy(unseen_rep) if unseen_rep else (seen, seen_se)
        pred, pred_sd = judge_model.predict(s, seen, unseen, seen_se, unseen_se, one_run=unseen_rep is None)
        m.update({f"seen_accuracy_{s}": seen, f"seen_accuracy_stderr_{s}": seen_se,
                  f"unseen_accuracy_{s}": unseen, f"unseen_accuracy_stderr_{s}": unseen_se,
                  f"predicted_accuracy_{s}": pred, f"predicted_accuracy_sd_{s}": pred_sd,
                  f"zh_rougeL_{s}": reports[0].zh_rougeL, f"n_questions_{s}": float(len(rows))})
        out.questions += qs
        out.references += refs
        out.answers += list(reports[0].answers)
        out.scores += list(reports[0].scores)
        if unseen_rep:
            out.unseen_answers += list(unseen_rep.answers)
            out.unseen_scores += list(unseen_rep.scores)
        if s == track:
            first = speed_reports[0]
            out.speed_questions = list(workload.questions if workload else qs)
            out.speed_answers = list(first.answers)
            lens = [len(a) for a in first.answers]
            m.update(speed_stats([r.chars_per_s for r in speed_reports]))
            m.update({"speed_n_questions": float(len(first.answers)),
                      "speed_distinct": 1.0 if len(set(workload.questions if workload else qs)) == len(first.answers)
                      else 0.0})
            if workload is not None:
                m["speed_pool_accuracy"] = _part(first, workload.references, workload.pool_positions).accuracy
                if cycled_post:
                    rep = run(ship_url, cycled(qs, len(workload)), [], False, timed=True)
                    predict_total += rep.predict_seconds
                    m["chars_per_s_cycled"] = rep.chars_per_s
            m.update({"seen_accuracy": seen, "unseen_accuracy": unseen, "seen_accuracy_stderr": seen_se,
                      "unseen_accuracy_stderr": unseen_se, "predicted_accuracy": pred, "predicted_accuracy_sd": pred_sd,
                      # the objective: the predicted judge accuracy of the build that ships
                      "accuracy": pred, "accuracy_stderr": pred_sd, "zh_rougeL": reports[0].zh_rougeL,
                      "predict_seconds": statistics.median(r.predict_seconds for r in speed_reports),
                      "n_questions": float(len(rows)), "speed_repeats": float(len(speed_reports)),
                      "answer_chars_mean": statistics.mean(lens), "answer_chars_median": statistics.median(lens),
                      "answer_chars_max": float(max(lens)), "answer_chars_min": float(min(lens)),
                      "empty_answers": float(sum(1 for a in first.answers if not a))})
    m["predict_seconds_total"] = predict_total
    m.update(outside)
    m["prefix_cache_resets"] = float(resets.count)
    m["prefix_cache_resets_early"] = float(resets.early)  # started before the POST needed them
    m["prefix_cache_reset_seconds"] = resets.seconds  # the resets' own time, hidden or waited for
    m["health_seconds"] = health_seconds
    m["two_builds"] = 1.0 if unseen_url else 0.0
    return out
