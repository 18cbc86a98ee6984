"""The judge model's arithmetic on synthetic ledgers: the prior blend and its sd, the offset,
the fitted w, the full linear map, borrowing, and the noise-aware pick."""

from __future__ import annotations

import math
import random

import pytest

from tournament.study.calibration import fit
from tournament.study.judge_model import JudgeModel, fit_set, prior, prior_weight


def test_prior_weight_is_the_public_share_of_the_judge_set():
    assert prior_weight("basic") == pytest.approx(100 / 292)
    assert prior_weight("bonus") == pytest.approx(92 / 358) == pytest.approx(prior_weight("plus"))


def test_prior_blend_and_its_sd():
    m = prior("basic")
    w = 100 / 292
    mean, sd = m.predict(0.8, 0.2, seen_se=0.03, unseen_se=0.04)
    assert mean == pytest.approx(w * 0.8 + (1 - w) * 0.2)
    want = math.sqrt((w * 0.03) ** 2 + ((1 - w) * 0.04) ** 2 + ((w / 4) * 0.6) ** 2)
    assert sd == pytest.approx(want)
    # one build (seen == unseen, no noise): the prior adds no uncertainty of its own
    assert m.predict(0.4, 0.4) == (pytest.approx(0.4), 0.0)


def test_one_result_is_an_offset_on_the_blend():
    m = fit_set("basic", [{"seen": 0.8, "unseen": 0.2, "judge": 0.36}])
    w = 100 / 292
    assert m.kind == "offset" and m.n == 1
    assert m.offset == pytest.approx(0.36 - (w * 0.8 + (1 - w) * 0.2))
    mean, sd = m.predict(0.8, 0.2)
    assert mean == pytest.approx(0.36) and sd == pytest.approx(math.sqrt(0.05 ** 2 + ((w / 4) * 0.6) ** 2))


def test_three_results_fit_w_and_an_offset():
    true_w, a = 0.6, 0.05
    pts = [{"seen": s, "unseen": u, "judge": a + true_w * s + (1 - true_w) * u}
           for s, u in ((0.8, 0.2), (0.7, 0.3), (0.9, 0.25))]
    m = fit_set("bonus", pts)
    assert m.kind == "fit-w" and m.w == pytest.approx(true_w) and m.offset == pytest.approx(a)
    assert m.sd == pytest.approx(0.01)  # exact points: the residual sd is floored
    assert m.predict(0.5, 0.1)[0] == pytest.approx(a + true_w * 0.5 + 0.4 * 0.1)


def test_noisy_points_give_a_residual_sd():
    rng = random.Random(0)
    pts = []
    for _ in range(4):
        s, u = rng.uniform(0.5, 0.9), rng.uniform(0.1, 0.3)
        pts.append({"seen": s, "unseen": u, "judge": 0.3 * s + 0.7 * u + rng.gauss(0, 0.02)})
    m = fit_set("basic", pts)
    assert m.kind == "fit-w" and 0 <= m.w <= 1 and m.sd > 0.01
    gaps = [p["seen"] - p["unseen"] for p in pts]
    resid = [p["judge"] - p["unseen"] - (m.offset + m.w * g) for p, g in zip(pts, gaps)]
    assert m.sd == pytest.approx(math.sqrt(sum(r * r for r in resid) / 2))


def test_five_results_fit_the_full_linear_map():
    pts = [{"seen": s, "unseen": u, "judge": 0.02 + 0.4 * s + 0.5 * u}
           for s, u in ((0.8, 0.2), (0.7, 0.3), (0.9, 0.25), (0.6, 0.1), (0.85, 0.35))]
    m = fit_set("basic", pts)
    assert m.kind == "fit-full"
    assert m.w == pytest.approx(0.4 / 0.9) and m.scale == pytest.approx(0.9) and m.offset == pytest.approx(0.02)
    assert m.predict(0.5, 0.5)[0] == pytest.approx(0.02 + 0.45)


def test_without_a_seen_unseen_gap_w_cannot_be_learnt():
    pts = [{"seen": a, "unseen": a, "judge": 0.1 + 0.5 * a} for a in (0.3, 0.4, 0.5)]
    m = fit_set("basic", pts)
    assert m.kind == "linear" and m.w == pytest.approx(prior_weight("basic"))
    assert m.scale == pytest.approx(0.5) and m.offset == pytest.approx(0.1)


def test_a_set_without_results_borrows_the_others_offset():
    jm = JudgeModel.from_points([{"set": "basic", "seen": 0.5, "unseen": 0.5, "judge": 0.45}])
    assert jm.sets["bonus"].kind == "borrowed"
    mean, sd = jm.predict("bonus", 0.5, 0.5)
    assert mean == pytest.approx(0.45) and sd == pytest.approx(0.10)
    assert JudgeModel.from_points().calibrated is False and jm.calibrated


def test_calibration_uses_seen_unseen_and_accuracy_only_results():
    pts = [{"set": "basic", "seen": s, "unseen": u, "judge_accuracy": 0.05 + 0.6 * s + 0.4 * u,
            "local_speed": None, "judge_speed": None} for s, u in ((0.8, 0.2), (0.7, 0.3), (0.9, 0.25))]
    cal = fit(pts)  # accuracy-only results: no speed prediction, but the accuracy is calibrated
    assert cal.speed_ratio is None and cal.accuracy["basic"].kind == "fit-w"
    p = cal.predict(None, 1000, "basic", seen=0.8, unseen=0.2)
    assert p["accuracy"] == pytest.approx(0.05 + 0.6 * 0.8 + 0.4 * 0.2) and p["chars_per_s"] is None


def _row(n, acc, speed, spread=0.0, sd=0.01, sc=None):
    from tournament.study.record import TrialRecord

    return TrialRecord.from_row({"trial": n, "state": "COMPLETE", "feasible": True, "accuracy": acc,
                                 "predicted_accuracy": acc, "predicted_accuracy_sd": sd, "chars_per_s": speed,
                                 "chars_per_s_score": speed * (1 - spread), "chars_per_s_rel_spread": spread,
                                 "serve_config": sc or {}, "duplicate_of": None})


def test_pick_passes_over_noisy_speed_unless_nothing_else_qualifies():
    from tournament.study.winner import auto_pick

    n, rule = auto_pick([_row(0, 0.5, 10000, spread=0.25), _row(1, 0.5, 6000, spread=0.02)], 0.35)
    assert n == 1
    n, rule = auto_pick([_row(0, 0.5, 10000, spread=0.25), _row(1, 0.5, 6000, spread=0.3)], 0.35)
    assert n == 0 and "spread" in rule


def test_pick_prefers_the_simpler_of_near_ties():
    from tournament.study.winner import auto_pick, non_default_settings

    fancy = {"decode": {"max_tokens": 300, "repetition_penalty": 1.2}, "engine": {"max_num_seqs": 64}}
    plain = {"decode": {"max_tokens": 300}, "engine": {}}
    assert non_default_settings(fancy) > non_default_settings(plain)
    n, rule = auto_pick([_row(0, 0.5, 10000, sc=fancy), _row(1, 0.5, 9950, sc=plain)], 0.35)
    assert n == 1 and "simplest" in rule
    n, _ = auto_pick([_row(0, 0.5, 10000, sc=fancy), _row(1, 0.5, 9800, sc=plain)], 0.35)  # 2% apart
    assert n == 0


def test_pick_never_takes_a_repeat():
    from tournament.study.winner import auto_pick

    rep = _row(2, 0.6, 99999)
    rep.duplicate_of = 0
    assert auto_pick([_row(0, 0.6, 5000), rep], 0.35)[0] == 0


def test_fallback_without_a_clear_trial_weighs_speed_noise_among_accuracy_ties():
    """Nothing clears the pass mark with margin: of the trials whose predicted accuracy ties the
    best (within 0.005), a steady fast one wins over a noisy one (the H200 study's trials 21, 5)."""
    from tournament.study.winner import auto_pick

    noisy = _row(21, 0.3994, 13743, spread=0.23, sd=0.043)
    steady = _row(5, 0.3993, 18920, spread=0.01, sd=0.061)
    lower = _row(9, 0.389, 19500, spread=0.02, sd=0.06)
    n, rule = auto_pick([noisy, steady, lower], 0.35)
    assert n == 5 and "most accurate feasible" in rule
    n, _ = auto_pick([noisy, lower], 0.35)  # 0.01 apart: not a tie, the more accurate wins
    assert n == 21


def test_one_build_adds_its_errors_up():
    # a base model's seen and unseen are one run: the blend's noise is that run's, not less
    m = prior("basic")
    assert m.predict(0.4, 0.4, 0.05, 0.05, one_run=True)[1] == pytest.approx(0.05)
    assert m.predict(0.4, 0.4, 0.05, 0.05)[1] < 0.05  # two independent runs average out
