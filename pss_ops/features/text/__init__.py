"""The title text embedding: the bundled model (model), its ONNX export (onnx) and batched encoding (encode)."""
