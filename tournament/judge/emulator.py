"""The judge emulator: what the remote judge does to a running server, step by step.

1. Poll `GET /` until it answers 200 with a JSON `status` (fail after the health limit).
2. `{"status": "batch"}`: one `POST /predict` with every question; the whole run fails if that call
   passes the predict limit or returns a list of another length.
   Otherwise: one `POST /predict` per question, in order; once the predict limit is spent every
   remaining answer is recorded as "".
3. Accuracy with the judge's exact function (`scoring.judge_accuracy`); speed = characters of all
   answers / seconds spent inside POST calls (start-up excluded).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

from tournament.judge import scoring
from tournament.judge.rules import HEALTH_TIMEOUT, PREDICT_TIMEOUT


@lru_cache(maxsize=1)
def _tls_context():
    import ssl

    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def http_client(**kwargs: Any):
    """The HTTP client of every judge call: never a proxy (trust_env=False), and one TLS context
    for the whole process. httpx builds a fresh one for each client, reading the CA bundle: about
    30 ms, which a sweep would pay on every judged run of every trial."""
    import httpx

    return httpx.Client(trust_env=False, verify=_tls_context(), **kwargs)


@dataclass
class JudgeReport:
    mode: str | None
    n: int
    accuracy: float
    zh_rougeL: float
    chars_per_s: float
    predict_seconds: float
    health_seconds: float | None
    failed: bool
    reason: str | None = None
    total_chars: int = 0
    answered: int = 0  # non-empty answers received
    scored: bool = True  # False for speed-only runs (judge(..., score=False))
    answers: list[str] = field(default_factory=list, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("answers")
        d.pop("scores")
        return d


def summary_table(summary: dict[str, Any], url: str):
    """A `JudgeReport.summary()` as a rich table of metric and value."""
    from rich.table import Table

    table = Table(title=f"judge emulator: {url}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


def wait_healthy(client, url: str, timeout: float, poll: float = 1.0) -> tuple[str | None, float, str | None]:
    """Return (status, seconds, error). The judge only proceeds on a 200 with a JSON status."""
    import httpx

    t0 = time.monotonic()
    last_error = "no answer"
    while True:
        elapsed = time.monotonic() - t0
        if elapsed > timeout:
            return None, elapsed, f"health check failed after {timeout:.0f} s ({last_error})"
        try:
            r = client.get(url.rstrip("/") + "/", timeout=max(0.5, min(10.0, timeout - elapsed)))
            if r.status_code == 200:
                status = r.json().get("status")
                return str(status), time.monotonic() - t0, None
            last_error = f"HTTP {r.status_code}"
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            last_error = type(e).__name__
        time.sleep(min(poll, max(0.0, timeout - (time.monotonic() - t0))))


def _post(client, url: str, payload: dict, timeout: float):
    return client.post(url.rstrip("/") + "/predict", json=payload, timeout=timeout)


def run_batch(client, url: str, questions: list[str], predict_timeout: float) -> tuple[list[str], float, str | None]:
    import httpx

    t0 = time.monotonic()
    try:
        r = _post(client, url, {"prompt": questions}, predict_timeout)
        spent = time.monotonic() - t0
    except httpx.TimeoutException:
        return [], time.monotonic() - t0, f"batch predict exceeded {predict_timeout:.0f} s"
    except httpx.HTTPError as e:
        return [], time.monotonic() - t0, f"batch predict failed: {type(e).__name__}: {e}"
    if spent > predict_timeout:
        return [], spent, f"batch predict took {spent:.1f} s > {predict_timeout:.0f} s"
    try:
        answers = r.json()["response"]
    except (ValueError, KeyError, TypeError):
        return [], spent, f"batch predict returned HTTP {r.status_code} without a response list"
    if not isinstance(answers, list) or len(answers) != len(questions):
        got = len(answers) if isinstance(answers, list) else type(answers).__name__
        return [], spent, f"batch predict returned {got} answers for {len(questions)} questions"
    return [str(a) for a in answers], spent, None


def run_serial(client, url: str, questions: list[str], predict_timeout: float) -> tuple[list[str], float, str | None]:
    import httpx

    answers: list[str] = []
    spent = 0.0
    for q in questions:
        remaining = predict_timeout - spent
        if remaining <= 0:
            answers.append("")  # the judge records "" for everything after the time is up
            continue
        t0 = time.monotonic()
        try:
            r = _post(client, url, {"prompt": q}, remaining)
            answer = r.json().get("response", "") if r.status_code == 200 else ""
        except (httpx.HTTPError, ValueError, AttributeError):
            answer = ""
        spent += time.monotonic() - t0
        answers.append("" if answer is None else str(answer))
    return answers, spent, None


def judge(
    url: str,
    questions: Sequence[str],
    references: Sequence[str],
    *,
    health_timeout: float = HEALTH_TIMEOUT["metax"],
    predict_timeout: float = PREDICT_TIMEOUT,
    poll: float = 1.0,
    score: bool = True,
    after_post: Callable[[], None] | None = None,
) -> JudgeReport:
    """Run the judge against `url`. score=False skips accuracy (speed-only repeats of a sweep):
    accuracy, zh_rougeL and scores are then left at 0 and `scored` is False. `after_post` runs once
    the answers are in, before they are scored (a sweep starts its next prefix-cache reset there)."""
    scoring.warm_up()  # jieba's dictionary loads outside every timed region
    questions = [str(q) for q in questions]
    with http_client() as client:
        status, health_s, err = wait_healthy(client, url, health_timeout, poll)
        if err:
            return _report(None, questions, references, [], 0.0, health_s, err)
        mode = "batch" if status == "batch" else "serial"
        runner = run_batch if mode == "batch" else run_serial
        answers, spent, err = runner(client, url, questions, predict_timeout)
    if after_post is not None and not err:
        after_post()
    return _report(mode, questions, references, answers, spent, health_s, err, score)


def _report(mode, questions, references, answers, spent, health_s, err, score=True) -> JudgeReport:
    refs = [str(r) for r in references]
    if err:  # a failed submission: the judge gives it nothing
        return JudgeReport(mode, len(questions), 0.0, 0.0, 0.0, spent, health_s, True, err,
                           answers=[""] * len(questions), scores=[0.0] * len(refs))
    accuracy, scores = scoring.judge_accuracy_and_scores(answers, refs) if score else (0.0, [])
    return JudgeReport(
        mode=mode,
        n=len(questions),
        accuracy=accuracy,
        zh_rougeL=scoring.zh_rougeL(answers, refs) if score else 0.0,
        chars_per_s=scoring.chars_per_s(answers, spent),
        predict_seconds=spent,
        health_seconds=health_s,
        failed=False,
        total_chars=sum(len(a) for a in answers),
        answered=sum(1 for a in answers if a),
        answers=answers,
        scores=scores,
        scored=score,
    )
