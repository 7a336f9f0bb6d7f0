"""Pretrained models run without their original frameworks (weights store, numpy forward passes)."""
