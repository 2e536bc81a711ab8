"""Pieces of the DINOv2 objective: losses, teacher targets, block masks, the temperature schedule."""
