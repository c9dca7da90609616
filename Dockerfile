# One image for every service of docker-compose.yml: the Ray head, the GPU workers, the one-shot
# jobs (prepare, train, vectors) and the editor. torch from PyPI is the CUDA build on Linux x86_64;
# the NVIDIA container runtime supplies the driver.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp: torch's OpenMP; procps: `ps`, used by `ray stop`; tini: reaps Ray's child processes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 procps tini \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first (their layer is rebuilt only when pyproject.toml changes), then the code.
WORKDIR /opt/faceedit
COPY pyproject.toml README.md ./
RUN mkdir -p faceedit workers ui \
 && touch faceedit/__init__.py workers/__init__.py ui/__init__.py \
 && pip install . \
 && pip uninstall -y faceedit
COPY faceedit ./faceedit
COPY workers ./workers
COPY ui ./ui
RUN pip install --no-deps .

# Unprivileged user; the shared volume is mounted at /faceedit (see docker-compose.yml).
RUN useradd --create-home --uid 1000 faceedit && mkdir -p /faceedit && chown faceedit /faceedit
USER faceedit
WORKDIR /faceedit

ENTRYPOINT ["tini", "--"]
CMD ["faceedit", "--help"]
