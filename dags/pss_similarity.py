"""One daily product-similarity DAG per application config in $PSS_CONFIG_DIR (default: examples/)."""

from __future__ import annotations

from pss_airflow.dag_factory import build_similarity_dags

for _dag in build_similarity_dags():
    globals()[_dag.dag_id] = _dag
