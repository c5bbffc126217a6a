"""Evaluation: classification and retrieval metrics, probes on frozen features, attention maps."""
