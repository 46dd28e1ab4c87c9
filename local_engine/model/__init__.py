"""The model's mathematics on MLX: config, attention (sliding, CSA, HCA, indexer), MoE, mHC
hyper-connections, RoPE, weight containers and the transformer itself.
"""
