# Judge image, Paratera track (RTX 5090 32 GB). To submit on this track the file must be named
# `Dockerfile`: `cp docker/paratera.Dockerfile Dockerfile` on the track's branch (docs/submitting.md).
# vLLM, torch and Python 3.12 come from the base image and are never reinstalled.
FROM vllm/vllm-openai:v0.11.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1

WORKDIR /app

COPY docker/requirements-serve.txt docker/pip-install-held.sh /app/docker/
RUN sh /app/docker/pip-install-held.sh -r /app/docker/requirements-serve.txt

COPY winner.json serve.py download_model.py /app/
COPY tournament/ /app/tournament/
ENV PYTHONPATH=/app \
    TOURNAMENT_WINNER=/app/winner.json

RUN python3 download_model.py /app/winner.json

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    VLLM_DO_NOT_TRACK=1 \
    DO_NOT_TRACK=1 \
    VLLM_USE_MODELSCOPE=False

EXPOSE 8000
# The base image's ENTRYPOINT is `vllm serve`; reset it so the judge's command (or ours) runs.
ENTRYPOINT []
CMD ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
