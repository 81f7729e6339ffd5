"""Small and fast models: 1.58-bit ternary layers with packed storage and a CPU kernel, and LoRA.

- `ternarize(model, include=, exclude=)`: BitNet b1.58 layers in place (quantization-aware training).
- `recalibrate_batchnorm(model, batches)`: BN statistics re-estimated for the ternary layers' outputs.
- `save_packed(model, path)` / `load_packed(model, path)`: 2-bit packed safetensors (HF BitNet layout).
- `packed_ternary_linear`, `PackedBitLinear`: packed ternary x int8 inference (compiled C kernel).
- `fovea.compress.lora`: LoRA adapters on Linear and Conv2d layers of any backbone.
"""

from fovea.compress import lora
from fovea.compress.kernel import PackedBitConv2d, PackedBitLinear, native_available, packed_ternary_linear
from fovea.compress.packing import pack_ternary, unpack_ternary
from fovea.compress.batchnorm import recalibrate_batchnorm
from fovea.compress.ternary import TernarizeReport, load_packed, save_packed, ternarize, ternary_layers

__all__ = [
    "PackedBitConv2d",
    "PackedBitLinear",
    "TernarizeReport",
    "load_packed",
    "lora",
    "native_available",
    "pack_ternary",
    "packed_ternary_linear",
    "recalibrate_batchnorm",
    "save_packed",
    "ternarize",
    "ternary_layers",
    "unpack_ternary",
]
