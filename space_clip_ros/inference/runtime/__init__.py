"""The inference runtime: the predictor, its engines (PyTorch, ONNX Runtime, TensorRT) and frame upload."""
