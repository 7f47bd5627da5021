"""PSS: Product Similarity Service library. Steps are plain functions over typed manifests."""

from pss_ops.blas import prefer_detected_kernels

__version__ = "0.1.0"

# Before anything loads faiss (see pss_ops.blas).
prefer_detected_kernels()
