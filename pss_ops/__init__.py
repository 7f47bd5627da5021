"""PSS: Product Similarity Service library. Steps are plain functions over typed manifests."""

__version__ = "0.1.0"
