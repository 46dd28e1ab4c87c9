"""Checkpoints on disk: the safetensors reader, tensor names, the official FP4/FP8 layout,
loading, conversion and quantization recipes, memory plans, fingerprints, random-weight
checkpoints and model comparison.
"""
