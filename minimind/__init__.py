"""minimind: MiniMind "classic" pretraining as a library (model, tokenizer, data, training engine)."""

__version__ = "0.1.0"
