# The app image: the Streamlit UI (default command) and the ingest CLI.
#
#   docker compose build app                        (see docker-compose.yml)
#   docker build -t rag-rerank-app .                 the CPU build of torch
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t rag-rerank-app:cuda .
#                                                   the CUDA build (PyPI's Linux wheel); run it with a GPU
#
# Installs the way scripts/setup.sh does: torch 2.13.0 first (CPU wheel from PyTorch's CPU
# index unless told otherwise), then the project's pinned dependencies with constraints.txt.
# Runs as the unprivileged user `app` (uid 10001). Models are downloaded into
# /home/app/.cache (HF_HOME and ~/.cache/rag-rerank), a volume in docker-compose.yml.

FROM python:3.12.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/app \
    HF_HOME=/home/app/.cache/huggingface \
    TOKENIZERS_PARALLELISM=false

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
 && python -m venv /opt/venv

WORKDIR /app

# 1. torch alone (the largest layer; changes only with the version or the index).
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# 2. The project's dependencies, pinned, before the source so that code changes reuse this layer.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 3. The project itself. The source stays root-owned and read-only to the app user; only the
#    upload folder and the model cache (both volumes in docker-compose.yml) are writable.
COPY . .
RUN pip install --no-deps -c constraints.txt . \
 && rm -rf build ./*.egg-info \
 && mkdir -p /app/uploads /home/app/.cache/huggingface /home/app/.cache/rag-rerank \
 && chown -R app:app /app/uploads /home/app

USER 10001:10001

EXPOSE 8501

# Inside the container Streamlit listens on all interfaces (the flag overrides the
# `address = "localhost"` of .streamlit/config.toml); docker-compose.yml publishes the
# port on the host's 127.0.0.1 only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]

CMD ["streamlit", "run", "ui/app.py", "--server.address=0.0.0.0", "--server.port=8501"]
