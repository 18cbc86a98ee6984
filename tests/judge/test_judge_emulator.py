"""The judge emulator's limits and arithmetic, against real (deliberately misbehaving) servers."""

import pytest

from tests.http_fakes import make_app, running
from tournament.judge.emulator import judge

QS = ["q1", "q2", "q3", "q4"]
REFS = ["warp 32 threads"] * 4


def test_batch_mode_scores_and_counts_characters():
    with running(make_app("batch", predict_delay=0.2)) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=5, poll=0.05)
    assert (r.mode, r.failed, r.n, r.accuracy) == ("batch", False, 4, 1.0)
    assert r.total_chars == 4 * len("warp 32 threads")
    assert r.predict_seconds >= 0.2
    assert r.chars_per_s == pytest.approx(r.total_chars / r.predict_seconds)


def test_serial_mode_one_post_per_question_and_speed_arithmetic():
    with running(make_app("ok", predict_delay=0.1)) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=5, poll=0.05)
    assert r.mode == "serial" and not r.failed
    assert r.answers == ["warp 32 threads"] * 4
    assert r.predict_seconds >= 0.4  # four sequential calls of >= 0.1 s
    assert r.chars_per_s == pytest.approx(60 / r.predict_seconds)


def test_serial_mode_records_empty_answers_after_the_limit():
    with running(make_app("ok", predict_delay=0.4)) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=0.9, poll=0.05)
    assert not r.failed
    assert r.answers[0] == "warp 32 threads" and r.answers[-1] == ""
    assert r.answered < 4
    assert r.accuracy == pytest.approx(r.answered / 4)


def test_batch_over_the_limit_fails_the_whole_run():
    with running(make_app("batch", predict_delay=1.5)) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=0.5, poll=0.05)
    assert r.failed and r.accuracy == 0.0 and "exceeded" in r.reason


def test_batch_with_wrong_answer_count_fails():
    with running(make_app("batch", drop_one=True)) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=5, poll=0.05)
    assert r.failed and "3 answers for 4 questions" in r.reason


def test_health_waits_for_ready_then_gives_up_at_the_limit():
    with running(make_app("batch", health_delay=0.5)) as url:
        ok = judge(url, QS, REFS, health_timeout=5, predict_timeout=5, poll=0.05)
    assert not ok.failed and ok.health_seconds >= 0.5
    with running(make_app("batch", health_delay=60)) as url:
        r = judge(url, QS, REFS, health_timeout=0.5, predict_timeout=5, poll=0.05)
    assert r.failed and "health check failed" in r.reason


def test_nothing_listening_fails_on_health():
    r = judge("http://127.0.0.1:9", QS, REFS, health_timeout=0.3, predict_timeout=1, poll=0.05)
    assert r.failed and r.mode is None


def test_speed_only_runs_skip_scoring():
    with running(make_app("batch")) as url:
        r = judge(url, QS, REFS, health_timeout=5, predict_timeout=5, poll=0.05, score=False)
    assert not r.scored and r.accuracy == 0.0 and r.scores == []
    assert r.chars_per_s > 0 and r.total_chars == 60


def test_questions_of_one_set_from_a_data_build(tmp_path):
    import json

    from tournament.data.ingest import load_questions

    rows = [{"question": f"q{i}", "answer": f"a{i}", "set": s} for i, s in enumerate(["basic", "plus", "basic"])]
    f = tmp_path / "eval.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_questions(f, set_name="basic") == (["q0", "q2"], ["a0", "a2"])
    assert load_questions(f, set_name="bonus") == (["q1"], ["a1"])  # the course's name for plus
    assert load_questions(f, set_name="basic", repeat_to=5)[0] == ["q0", "q2", "q0", "q2", "q0"]
    with pytest.raises(ValueError, match="no rows of set"):
        load_questions(f, set_name="advanced")
