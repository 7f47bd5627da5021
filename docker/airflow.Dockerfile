# The Airflow image of the local stack (docker-compose.yml): Airflow 3.3.2 plus pss[airflow], the DAGs,
# the plugins and the example application configs.
#
#   docker compose build                      (all Airflow services share this one image)
#   docker compose build --build-arg TORCH_INDEX_URL=https://mirror.example/whl/cpu
#
# Build arguments:
#   TORCH_INDEX_URL  where the torch wheel comes from (default: the PyTorch CPU index, so no CUDA is pulled in)
#   TORCH_VERSION    must match the `torch==` pin in pyproject.toml and requirements.lock
#   AIRFLOW_IMAGE    must carry the apache-airflow version pinned in requirements.lock (3.3.2)
#
# In the compose stack dags/, plugins/ and examples/ are also bind-mounted read-only over the copies made
# here, so edits show up without a rebuild; the copies make the image usable on its own.

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# ---------------------------------------------------------------- wheel: build pss once, as root, in a scratch tree
# Building here (not in the Airflow image) keeps the sources and the build's writes out of the final image,
# and needs no write access for the airflow user.
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
# pss_ops/sql is a symlink to ../sql: copying sql/ next to pss_ops/ makes it resolve as in a checkout, and
# setuptools puts the files into the wheel (see docker/batch.Dockerfile for the full reasoning).
COPY sql/ sql/
COPY pss_ops/ pss_ops/
RUN test -f pss_ops/sql/similar_items.sql \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && python -c "import glob, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/pss-*.whl')[0]).namelist(); \
assert 'pss_ops/sql/similar_items.sql' in names, 'pss_ops/sql is missing from the wheel'" \
 && cp requirements.lock /wheels/

# ---------------------------------------------------------------- the Airflow image
FROM ${AIRFLOW_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# libgomp: the OpenMP runtime LightGBM's wheel (the pair matcher, run by local-executor tasks) links.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# The official image expects packages to be installed by the airflow user (into its user site).
USER airflow

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and alone; --no-deps so its dependencies come from PyPI at the lock's versions (next step).
RUN pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# pss with the `airflow` extra (the Amazon provider), every version constrained by our lock. Naming
# apache-airflow at the image's own version, as the image's docs advise, makes pip fail loudly rather than
# up- or downgrade Airflow if AIRFLOW_IMAGE and the lock ever disagree. The base image ships psycopg2 for the
# metadata DB (postgresql+psycopg2://); pss brings psycopg 3 for the warehouse (postgresql+psycopg://).
COPY --from=wheel /wheels/ /tmp/pss-wheels/
RUN pip install --constraint /tmp/pss-wheels/requirements.lock \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "$(ls /tmp/pss-wheels/pss-*.whl)[airflow]" \
 && python -c "import pss_ops.cli, airflow.providers.amazon, lightgbm"

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 examples/ /opt/airflow/examples/
COPY --chown=airflow:0 data/ /opt/airflow/data/

# The text model ships inside a Python package; tasks that run `pss step` locally must never download.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PSS_CONFIG_DIR=/opt/airflow/examples
