"""Learned product embeddings: the multi-task SiameseNet of paper §3.1.2 and its model registry."""
