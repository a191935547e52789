"""The DuckDB knowledge base: migrations, the store, retrieval, shipped research cards."""

from knowledge.connect import KnowledgeBaseLocked
from knowledge.store import KnowledgeBase

__all__ = ["KnowledgeBase", "KnowledgeBaseLocked"]
