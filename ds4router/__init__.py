"""ds4router: route LLM requests between a local engine and cloud models, and price them."""

__version__ = "0.1.0"
