"""normscope: what an LLM checkpoint really holds, before anyone spends GPU hours on it."""

__version__ = "0.1.0"
