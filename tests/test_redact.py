"""The one set of secret patterns (tournament/redact.py) that tracking, the teacher client and the
Dockerfile lint share."""

from tournament import redact, tracking


def test_secret_names_and_token_counts():
    for name in ("HF_TOKEN", "MODELSCOPE_API_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD",
                 "db_passwd", "GOOGLE_APPLICATION_CREDENTIALS"):
        assert redact.secret_name(name), name
    for name in ("MAX_TOKENS", "max_num_batched_tokens", "TOURNAMENT_ENGINE", "PYTHONPATH",
                 "TOURNAMENT_GGUF_TOKENIZER", "TOKENIZERS_PARALLELISM"):
        assert not redact.secret_name(name), name
    assert redact.secret_key("serve.api_key") and redact.secret_key("HF_TOKEN")
    for key in ("max_tokens", "tokens", "stop_token_ids", "group_key", "cache_key"):
        assert not redact.secret_key(key), key


def test_scrub_text_masks_every_kind_of_secret():
    env = {"MY_API_KEY": "k3y-value-123", "SHORT_TOKEN": "1", "PATH": "/usr/bin"}
    text = ("key k3y-value-123, arg s3cret-arg, hub hf_" + "a" * 24 + ", header Authorization: Bearer abc.def, "
            "db postgresql://user:pw@host/db, path /usr/bin, count 1")
    out = redact.scrub_text(text, env, values=["s3cret-arg", None])
    for leaked in ("k3y-value-123", "s3cret-arg", "hf_aaa", "abc.def", ":pw@"):
        assert leaked not in out, out
    assert "Bearer ***" in out and "postgresql://user:***@host/db" in out
    assert "/usr/bin" in out and "count 1" in out  # not secret-named; a short value masks nothing
    # the GGUF import logs where its tokenizer files came from: a folder, not a secret
    said = "tokenizer: tokenizer files from /tmp/gemma-tokenizer; 0% of its whole words split"
    assert redact.scrub_text(said, {"TOURNAMENT_GGUF_TOKENIZER": "/tmp/gemma-tokenizer"}) == said


def test_tracking_scrubs_with_the_same_functions():
    assert tracking.scrub is redact.scrub and tracking.scrub_text is redact.scrub_text
