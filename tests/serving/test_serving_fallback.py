"""The app's fallback when the engine fails: one non-empty answer per prompt, always."""

import pytest

from tournament.serving import app as serving_app
from tournament.serving.config import ServeConfig


class FailingOnBatchesEngine:
    """An engine that fails whole batches and one specific prompt (as an OOM or a bad prompt would)."""

    name = "failing"
    tokenizer = None

    def generate(self, prompts, decode):
        if len(prompts) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        if "boom" in prompts[0]:
            raise ValueError("prompt too long (simulated)")
        return [f"answer to {prompts[0][-8:]}"]

    def close(self):
        pass


@pytest.fixture
def state():
    saved = (serving_app.state.config, serving_app.state.engine)
    serving_app.state.config = ServeConfig()
    serving_app.state.engine = FailingOnBatchesEngine()
    yield serving_app.state
    serving_app.state.config, serving_app.state.engine = saved


def test_failed_batch_is_retried_one_by_one_and_failures_echo_the_question(state):
    answers = serving_app.answer_questions(["first question", "boom question", "third"])
    assert len(answers) == 3 and all(answers)
    assert answers[0].startswith("answer to")
    assert answers[1] == "boom question"  # fallback: the question itself (scores > 0, unlike "")
    assert state.stats["engine_errors"] >= 2 and state.stats["fallbacks"] >= 1


def test_answers_are_cut_at_stop_strings_and_thinking_is_stripped(state):
    class Chatty(FailingOnBatchesEngine):
        def generate(self, prompts, decode):
            return ["<think>hmm</think> warp 32 threads\n问题：next question" for _ in prompts]

    state.engine = Chatty()
    assert serving_app.answer_questions(["q"]) == ["warp 32 threads"]


def test_an_answer_empty_after_cleaning_is_the_question_and_counts_as_a_fallback(state):
    class OnlyThinking(FailingOnBatchesEngine):
        def generate(self, prompts, decode):
            return ["<think>no answer</think>  \n问题：next" if "empty" in p else "fine" for p in prompts]

    state.engine = OnlyThinking()
    state.stats["fallbacks"] = 0
    assert serving_app.answer_questions(["empty one", "full one"]) == ["empty one", "fine"]
    assert state.stats["fallbacks"] == 1
