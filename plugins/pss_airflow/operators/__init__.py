"""Operators: run `pss step` commands locally or as AWS Batch (array) jobs."""
