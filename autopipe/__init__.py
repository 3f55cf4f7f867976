"""AutoPipe: budget-aware configuration search for LLM post-training pipelines on Ray."""

__version__ = "0.1.0"
