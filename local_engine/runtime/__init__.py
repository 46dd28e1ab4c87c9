"""Running a loaded model: the Engine, token generation and its events, sampling, tokenizer,
DeepSeek V4 chat encoding, streaming detokenization and the serial worker thread.
"""
