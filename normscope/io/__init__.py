"""Everything that touches bytes: safetensors shards, GGUF, the HF hub and cache, the embedded example."""

from .atomic import write_bytes_atomic, write_text_atomic
from .checkpoint import DEFAULT_CHUNK_ELEMENTS, Checkpoint, TensorEntry
from .examples import DEFAULT_EXAMPLE, default_cache_dir, example_path
from .gguf_file import GGUFCheckpoint
from .hub import HubId, parse_hub_id, resolve_hub
from .safetensors_file import SafetensorsCheckpoint, read_header
from .source import EXAMPLE_PREFIX, open_path, open_source

__all__ = [
    "Checkpoint", "DEFAULT_CHUNK_ELEMENTS", "DEFAULT_EXAMPLE", "EXAMPLE_PREFIX", "GGUFCheckpoint", "HubId",
    "SafetensorsCheckpoint", "TensorEntry", "default_cache_dir", "example_path", "open_path",
    "open_source", "parse_hub_id", "read_header", "resolve_hub", "write_bytes_atomic", "write_text_atomic",
]
