# Judge image, Moore Threads track (S4000; no vLLM: the transformers engine on torch_musa).
# To submit on this track: `cp docker/mthreads.Dockerfile Dockerfile` on the track's branch.
# The base is plain Python 3.10, so everything is installed from a full lock
# (docker/requirements-mthreads.lock.txt) and torch comes from TORCH_PIP_ARGS below.
FROM python:3.10

# torch for this track. The default installs CPU torch 2.2.0 (works anywhere, slowly). For the
# S4000, pass the track's MUSA wheels instead, e.g.
#   --build-arg TORCH_PIP_ARGS="torch==2.2.0 torch_musa==<ver> --extra-index-url <track index>"
# or edit the default below. Skipped when the base already has torch.
ARG TORCH_PIP_ARGS="torch==2.2.0 --index-url https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

COPY docker/requirements-serve.txt docker/mthreads.in docker/requirements-mthreads.lock.txt docker/pip-install-held.sh /app/docker/
# hadolint ignore=DL3013
RUN python3 -c "import torch" 2>/dev/null || python3 -m pip install --no-cache-dir ${TORCH_PIP_ARGS}
RUN sh /app/docker/pip-install-held.sh -r /app/docker/requirements-mthreads.lock.txt

COPY winner.json serve.py download_model.py /app/
COPY tournament/ /app/tournament/
ENV PYTHONPATH=/app \
    TOURNAMENT_WINNER=/app/winner.json \
    TOURNAMENT_ENGINE=transformers \
    TOURNAMENT_DEVICE=auto

RUN python3 download_model.py /app/winner.json

ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    DO_NOT_TRACK=1

EXPOSE 8000
ENTRYPOINT []
CMD ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
