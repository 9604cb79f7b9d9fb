"""Everything that touches bytes: safetensors shards, GGUF, the HF hub and cache, the embedded example,
quantized packs and LoRA adapters (read as dequantized / merged weights)."""

from .atomic import atomic_writer, write_bytes_atomic, write_text_atomic
from .checkpoint import DEFAULT_CHUNK_ELEMENTS, Checkpoint, TensorEntry
from .embedded import DEFAULT_EXAMPLE, default_cache_dir, example_path
from .gguf_file import GGUFCheckpoint
from .hub import HubId, parse_hub_id, resolve_hub
from .packs import PACKS, PackedCheckpoint, apply_adapter, wrap_pack
from .safetensors_file import SafetensorsCheckpoint, read_header
from .source import EXAMPLE_PREFIX, open_path, open_source
from .staging import StagedDirectory
from .torch_file import TorchCheckpoint
from .writer import copy_file, encode, rewrite_safetensors, verify_file

__all__ = [
    "Checkpoint", "DEFAULT_CHUNK_ELEMENTS", "DEFAULT_EXAMPLE", "EXAMPLE_PREFIX", "GGUFCheckpoint", "HubId",
    "PACKS", "PackedCheckpoint", "SafetensorsCheckpoint", "TensorEntry", "TorchCheckpoint", "apply_adapter",
    "default_cache_dir",
    "example_path", "open_path", "wrap_pack",
    "atomic_writer", "open_source", "parse_hub_id", "read_header", "resolve_hub", "write_bytes_atomic",
    "write_text_atomic",
    "StagedDirectory", "copy_file", "encode", "rewrite_safetensors", "verify_file",
]
