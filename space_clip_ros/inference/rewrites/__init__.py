"""Graph rewrites for the fast paths: ONNX export, batch-norm folding, attention, int8 quantisation, resize."""
