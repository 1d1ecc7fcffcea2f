"""Fusion adapters: ways to fuse image and text inside a pretrained VLM."""
