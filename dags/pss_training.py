"""One manually triggered model-training DAG per application config in $PSS_CONFIG_DIR (default: examples/)."""

from __future__ import annotations

from pss_airflow.train_dag import build_training_dags

for _dag in build_training_dags():
    globals()[_dag.dag_id] = _dag
