"""A prompt variant that renders like another on the build (``chat`` on a tokenizer without a chat
template is ``plain``) is served as that one: the sweep measures it once, and the other name's
trial is a repeat of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tournament.cli import app
from tournament.prompting import PromptSpec, effective_spec, render_prompt, tokenizer_dir_has_chat_template

runner = CliRunner()


def without_chat_template(model: Path, out: Path) -> Path:
    """A copy of `model` whose tokenizer has no chat template (as a base model's, or the GGUF gemma's)."""
    shutil.copytree(model, out)
    for name in ("chat_template.jinja", "chat_template.json"):
        (out / name).unlink(missing_ok=True)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    return out


def test_chat_template_is_read_from_the_tokenizer_files(tiny_model_dir, tmp_path):
    assert tokenizer_dir_has_chat_template(tiny_model_dir) is True
    assert tokenizer_dir_has_chat_template(without_chat_template(tiny_model_dir, tmp_path / "bare")) is False
    assert tokenizer_dir_has_chat_template(tmp_path / "nothing-here") is None


def test_effective_spec_renders_as_render_prompt_does(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    chat = PromptSpec(style="chat", system="Answer briefly.")
    plain, plain_system = PromptSpec(), PromptSpec(system="Answer briefly.")
    for folder in (tiny_model_dir, without_chat_template(tiny_model_dir, tmp_path / "bare")):
        tok = AutoTokenizer.from_pretrained(str(folder))
        has = tokenizer_dir_has_chat_template(folder)
        for a, b in ((chat, plain), (plain_system, plain), (chat, plain_system)):
            same_text = render_prompt(a, "什么是 warp？", tok) == render_prompt(b, "什么是 warp？", tok)
            assert same_text == (effective_spec(a, has) == effective_spec(b, has)), (folder, a, b)


def _sweep_file(tmp_path: Path, model: Path, qa: Path) -> Path:
    doc = {
        "study": "aliases",
        "trials": 3,
        "candidates": [{"id": "bare", "model_path": str(model),
                        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
        "eval": {"path": str(qa), "limit": 4},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
        "space": {"prompt": {"plain": {}, "chat": {"style": "chat"}},
                  "decode": {"max_tokens": [4, 6]}, "mode": "batch"},
        "enqueue": [{"prompt": "plain", "decode": {"max_tokens": 4}},
                    {"prompt": "chat", "decode": {"max_tokens": 4}}],
    }
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


@pytest.mark.parametrize("template", [False, True], ids=["no-chat-template", "chat-template"])
def test_sweep_serves_chat_as_plain_only_when_the_build_has_no_chat_template(
        template, tiny_model_dir, tiny_qa_file, tmp_path):
    import optuna
    from optuna.trial import TrialState

    model = tiny_model_dir if template else without_chat_template(tiny_model_dir, tmp_path / "bare")
    runs = tmp_path / "runs"
    r = runner.invoke(app, ["sweep", "-c", str(_sweep_file(tmp_path, model, tiny_qa_file)),
                            "--runs-dir", str(runs), "--no-track", "--trials", "2"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="aliases", storage=f"sqlite:///{runs / 'optuna.db'}")
    done = sorted((t for t in study.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    by_prompt = {t.params["prompt"]: t for t in done[:2]}
    plain, chat = by_prompt["plain"], by_prompt["chat"]
    assert chat.params["decode.max_tokens"] == plain.params["decode.max_tokens"] == 4
    if template:  # a real chat template: another prompt, measured on its own servers
        assert "duplicate_of" not in chat.user_attrs and "prompt_served_as" not in chat.user_attrs
        assert chat.user_attrs["group_key"] != plain.user_attrs["group_key"]
        assert chat.user_attrs["serve_config"]["prompt"]["style"] == "chat"
    else:  # the same prompt: the chat trial repeats the plain one, nothing measured twice
        assert "'chat' served as 'plain' (its tokenizer has no chat template)" in r.output
        assert chat.user_attrs["prompt_served_as"] == "plain"
        assert chat.user_attrs["duplicate_of"] == plain.number
        assert chat.values == plain.values
        assert not (runs / "studies" / "aliases" / "trials" / f"{chat.number:04d}").exists()


def test_named_templates_count_and_a_gguf_or_unbuilt_candidate_is_never_merged(tiny_model_dir, tiny_qa_file,
                                                                                 tmp_path):
    from tournament.study.config import load_sweep_config
    from tournament.study.inputs import Build, ResolvedCandidate
    from tournament.study.served_prompt import ServedPrompts

    bare = without_chat_template(tiny_model_dir, tmp_path / "bare")
    named = without_chat_template(tiny_model_dir, tmp_path / "named")
    (named / "additional_chat_templates").mkdir()
    (named / "additional_chat_templates" / "default.jinja").write_text("{{ messages[0]['content'] }}")
    assert tokenizer_dir_has_chat_template(named) is True
    cfg = load_sweep_config(_sweep_file(tmp_path, bare, tiny_qa_file))
    lines: list[str] = []

    def candidate(model: Path, **kw) -> ResolvedCandidate:
        return ResolvedCandidate(id=f"{model.name}{kw}", prompt={}, engine={}, info={},
                                 builds={"base": Build("base", "h", model_path=str(model))}, **kw)

    prompts = ServedPrompts(cfg, lines.append)
    assert prompts.aliases(candidate(bare)) == {"plain": "plain", "chat": "plain"}
    assert prompts.aliases(candidate(named)) == {"plain": "plain", "chat": "chat"}
    assert prompts.aliases(candidate(bare, gguf_file="model.gguf")) == {}  # its template is in the file
    assert prompts.aliases(candidate(tmp_path / "not-built-yet")) == {}
    assert len(lines) == 1 and "'chat' served as 'plain'" in lines[0]
