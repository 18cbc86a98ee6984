"""Variant groups: templates discovered from data, answer/frame/near-duplicate rules, speed."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tournament.data.groups import GroupingRules, group_rows
from tournament.data.ingest import QARow, read_qa
from tournament.data.neardup import NearIndex, jaccard, jaccard_join, shingles

DATA = Path(__file__).resolve().parents[2] / "data" / "pmpp"

BASES = [
    ("什么是warp？", "warp是32个线程组成的调度单位，同一warp内的线程以SIMD方式执行同一条指令。"),
    ("共享内存有什么作用？", "shared memory是线程块内共享的片上存储，用于复用数据、减少global memory访问。"),
    ("什么是合并访问？", "coalescing指同一warp的线程访问连续地址时，硬件把多个访问合并成少量内存事务。"),
    ("__syncthreads()的作用是什么？", "__syncthreads()是线程块内的屏障同步，所有线程到达后才继续执行。"),
    ("什么是占用率？", "occupancy指SM上活跃warp数与最大可支持warp数之比，受寄存器和shared memory限制。"),
    ("tiling为什么能提速？", "tiling把数据分块放进shared memory，让每个元素被多次复用，提高计算访存比。"),
]
PREFIXES = ["简答：", "只给结论：", "问：", "请用一句话回答：", "面向评测：直接输出答案，不要解释。问题："]


def rows_of(pairs):
    return [QARow(q, a) for q, a in pairs]


def test_prefix_templates_are_discovered_and_stripped():
    pairs = list(BASES) + [(p + q, a) for q, a in BASES for p in PREFIXES]
    g = group_rows(rows_of(pairs), GroupingRules(use_answers=False, use_frames=False, use_near=False))
    assert g.n_groups == len(BASES)
    found = {t.text: t.support for t in g.templates if t.kind == "prefix"}
    assert found == {"简答:": 6, "只给结论:": 6, "问:": 6, "请用一句话回答:": 6, "面向评测:直接输出答案,不要解释.问题:": 6}
    assert g.merges["template"] == len(BASES) * len(PREFIXES)
    assert g.examples["template"][0] == (BASES[0][0], "简答：" + BASES[0][0])


def test_suffix_templates_and_stacked_templates():
    suffixes = ["（请简要回答）", "（不要解释）", "（考试题）", "（一句话）", "请给出术语"]
    pairs = list(BASES) + [(q + s, a) for q, a in BASES for s in suffixes] + [("简答：" + q, a) for q, a in BASES]
    pairs.append(("简答：" + BASES[0][0] + "（考试题）", "x" * 10))  # two templates stacked
    g = group_rows(rows_of(pairs), GroupingRules(use_answers=False, use_frames=False, use_near=False))
    assert {t.text for t in g.templates if t.kind == "suffix"} == {"(请简要回答)", "(不要解释)", "(考试题)", "(一句话)", "请给出术语"}
    assert {t.text for t in g.templates if t.kind == "prefix"} == {"简答:"}
    assert g.groups[-1] == g.groups[0]
    assert g.n_groups == len(BASES)


def test_rare_or_unbounded_affixes_are_not_templates():
    # "编" + "写..." and "cuda" + "malloc": shared affixes that are not templates
    pairs = [("写一个kernel实现向量加法", "a" * 20), ("编写一个kernel实现向量加法", "b" * 20)]
    terms = ["简述cuda", "如何理解cuda", "什么是cuda", "请解释cuda", "请用要点说明cuda"]
    pairs += [(t, f"答案{i}" * 5) for i, t in enumerate(terms)] + [(t + "malloc", f"另一个{i}" * 5) for i, t in enumerate(terms)]
    g = group_rows(rows_of(pairs), GroupingRules(use_answers=False, use_frames=False, use_near=False))
    assert [t for t in g.templates if t.kind in ("prefix", "suffix")] == []
    assert g.groups[0] != g.groups[1]
    assert len({g.groups[i] for i in range(2, 12)}) == 10


def test_same_answer_merges_rephrasings_and_min_length_guards_short_answers():
    answer = "数据并行性：把计算围绕数据拆分成彼此独立的小任务并行执行。"
    pairs = [("简述数据并行性。", answer), ("如何理解数据并行性？", answer), ("A是什么？", "是"), ("B是什么？", "是")]
    g = group_rows(rows_of(pairs))
    assert g.groups[0] == g.groups[1]
    assert g.groups[2] != g.groups[3]  # "是" is too short to say two questions are one
    assert g.merges["answer"] == 1


def test_frames_join_the_same_term_across_different_answers():
    terms = ["数据并行性", "异构计算", "线程束调度", "共享内存", "常量内存", "原子操作"]
    frames_a = ["简述{}。", "如何理解{}？"]
    frames_b = ["请给出{}的例子。", "请解释{}的含义和作用。"]
    pairs = []
    for i, t in enumerate(terms):
        pairs += [(f.format(t), f"{t}的第一种答案，编号{i}，内容足够长。") for f in frames_a]
        pairs += [(f.format(t), f"{t}的另一种答案，编号{i}，完全不同的写法。") for f in frames_b]
        pairs += [(f"什么是{t}？", f"{t}的第一种答案，编号{i}，内容足够长。"), (f"说说{t}的要点。", f"{t}的另一种答案，编号{i}，完全不同的写法。")]
    g = group_rows(rows_of(pairs), GroupingRules(use_near=False))
    frames = {t.text for t in g.templates if t.kind == "frame"}
    assert "简述{}." in frames or "简述{}" in frames
    assert g.n_groups == len(terms)
    assert g.merges["frame"] >= len(terms)
    no_frames = group_rows(rows_of(pairs), GroupingRules(use_near=False, use_frames=False))
    assert no_frames.n_groups == 2 * len(terms)


def test_near_duplicate_questions_and_answers():
    long_q = "在tiled矩阵乘法中，为什么每个阶段加载完子矩阵后都必须调用__syncthreads()？"
    near_q = "在tiled矩阵乘法中，为什么每个阶段加载完子矩阵后必须调用__syncthreads()？"
    long_a = "因为线程块内的线程要先把Mds和Nds完整加载到shared memory，其他线程才能读取；否则会读到旧数据。"
    near_a = "因为线程块内的线程要先把Mds和Nds完整加载到shared memory，其他线程才能读取，否则会读到旧数据！"
    pairs = [(long_q, "x" * 30), (near_q, "y" * 30), ("问题一", long_a), ("问题二", near_a),
             ("请用要点说明warp", "z" * 30), ("请用要点说明warp调度", "w" * 30)]
    g = group_rows(rows_of(pairs))
    assert g.groups[0] == g.groups[1] and g.groups[2] == g.groups[3]
    assert g.groups[4] != g.groups[5]  # short: below min_near_chars, different questions
    assert g.merges["near_question"] == 1 and g.merges["near_answer"] == 1
    strict = group_rows(rows_of(pairs), GroupingRules(near_threshold=0.99))
    assert strict.groups[0] != strict.groups[1]


def test_group_ids_do_not_depend_on_row_order():
    pairs = list(BASES) + [(p + q, a) for q, a in BASES for p in PREFIXES]
    g1 = group_rows(rows_of(pairs))
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    g2 = group_rows(rows_of(shuffled))
    assert dict(zip(pairs, g1.groups)) == dict(zip(shuffled, g2.groups))


def test_jaccard_join_is_exact_against_brute_force():
    rng = random.Random(0)
    alphabet = "abcdefgh共享内存线程"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(3, 25))) for _ in range(150)]
    texts += [t[:-1] for t in texts[:40]]  # guaranteed near pairs
    sets = [shingles(t) for t in texts]
    for threshold in (0.5, 0.8):
        got = {(i, j) for i, j, _ in jaccard_join(sets, threshold=threshold)}
        want = {(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets)) if jaccard(sets[i], sets[j]) >= threshold}
        assert got == want
        index = NearIndex(threshold)
        for s in sets[:100]:
            index.add(s)
        for k in range(100, len(sets)):
            assert {j for j, _ in index.query(sets[k])} == {j for j in range(100) if jaccard(sets[k], sets[j]) >= threshold}


@pytest.mark.slow
def test_shipped_data_groups_fast_and_as_documented():
    rows = read_qa(DATA / "data.jsonl") + read_qa(DATA / "basic.docx") + read_qa(DATA / "plus.docx")
    start = time.perf_counter()
    g = group_rows(rows)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, elapsed  # ~1 s on a laptop core; CI has 2 slow cores
    prefixes = {t.text: t.support for t in g.templates if t.kind == "prefix"}
    assert len(prefixes) == 27 and prefixes["简答:"] == 192 and prefixes["面向评测:直接输出答案,不要解释.问题:"] == 192
    assert not [t for t in g.templates if t.kind == "suffix"]
    docx_groups = {g.groups[i] for i in range(7370, len(rows))}
    assert len(docx_groups) == 192  # no two sample questions were merged
    assert g.n_groups == 299
