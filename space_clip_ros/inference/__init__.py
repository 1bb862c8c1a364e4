"""Inference: the predictor shared by the node, the CLIs and the bag tool."""
