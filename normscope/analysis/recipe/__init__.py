"""`recipe`: a ggml type per tensor that minimises the measured error under a size budget."""

from .command import recipe, recipe_model

__all__ = ["recipe", "recipe_model"]
