# Judge image, MetaX track (the default: the judge builds the file named `Dockerfile`).
# Other tracks: docker/paratera.Dockerfile, docker/mthreads.Dockerfile (see docs/submitting.md).
# The FROM line is prescribed by the track and may not change. torch 2.6, vLLM 0.10.0 and
# Python 3.10 come from it and are never reinstalled.
FROM cr.metax-tech.com/public-ai-release/maca/vllm:maca.ai3.1.0.7-torch2.6-py310-ubuntu22.04-amd64

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# 1. The `serve` extra + modelscope, holding every package the image already has (see the script).
COPY docker/requirements-serve.txt docker/pip-install-held.sh /app/docker/
RUN sh /app/docker/pip-install-held.sh -r /app/docker/requirements-serve.txt

# 2. The code (copied, not pip-installed: serve.py finds winner.json beside the package).
COPY winner.json serve.py download_model.py /app/
COPY tournament/ /app/tournament/
ENV PYTHONPATH=/app \
    TOURNAMENT_WINNER=/app/winner.json

# 3. The model: serve.model.modelscope_id@revision from winner.json into serve.model.path
#    (public ModelScope repo, no token). Fails the build with a clear message if anything is off.
RUN python3 download_model.py /app/winner.json

# 4. Run stage: no network.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    VLLM_DO_NOT_TRACK=1 \
    DO_NOT_TRACK=1 \
    VLLM_USE_MODELSCOPE=False

EXPOSE 8000
CMD ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
