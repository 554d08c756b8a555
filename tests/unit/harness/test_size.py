"""Size: the reported bytes are the bytes on disk."""
from __future__ import annotations

import os

from optikit.harness.size import measure_size
from optikit.variant import MANIFEST


def test_reported_sizes_equal_bytes_on_disk(digits_teacher) -> None:
    size = measure_size(digits_teacher)
    on_disk = {}
    for root, _, files in os.walk(digits_teacher.path):
        for name in files:
            if name != MANIFEST:
                full = os.path.join(root, name)
                on_disk[os.path.relpath(full, digits_teacher.path)] = os.path.getsize(full)
    assert size.files == on_disk
    assert size.bytes_on_disk == sum(on_disk.values())
    assert size.weight_bytes == on_disk["model.safetensors"]
    assert size.parameters == 5978 and 0 < size.compressed_bytes
