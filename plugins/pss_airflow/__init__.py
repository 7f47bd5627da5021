"""Airflow-side code for PSS, laid out like the Amazon provider: hooks wrap clients, operators call hooks."""
