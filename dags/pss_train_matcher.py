"""One manually triggered pair-matcher training DAG per application config in $PSS_CONFIG_DIR (default: examples/)."""

from __future__ import annotations

from pss_airflow.train_matcher_dag import build_train_matcher_dags

for _dag in build_train_matcher_dags():
    globals()[_dag.dag_id] = _dag
