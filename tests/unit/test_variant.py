"""Specification of the Variant record and its manifest."""
import json

import pytest

from optikit.errors import ModelLoadError
from optikit.variant import MANIFEST, load_variant, variant_id


def test_manifest_round_trips(digits_teacher):
    again = load_variant(digits_teacher.path)
    assert again == digits_teacher
    manifest = json.loads((digits_teacher.path / MANIFEST).read_text())
    assert {"id", "parent", "format", "lineage", "task", "splits", "versions"} <= set(manifest)
    assert manifest["format"] == "torch" and manifest["parent"] is None


def test_teacher_weights_are_safetensors_not_pickle(digits_teacher):
    files = {p.name for p in digits_teacher.path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".pt", ".pth", ".bin", ".pkl")) for name in files)


def test_variant_id_is_a_content_hash():
    assert variant_id("a", {"x": 1}) == variant_id("a", {"x": 1})
    assert variant_id("a", {"x": 1}) != variant_id("a", {"x": 2})


def test_missing_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_variant(tmp_path / "nope")


def test_directory_without_manifest_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match=f"has no {MANIFEST}"):
        load_variant(tmp_path)


def test_corrupt_manifest_is_rejected(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a valid optikit manifest"):
        load_variant(tmp_path)


def test_manifest_without_weights_is_rejected(digits_teacher, tmp_path):
    (tmp_path / MANIFEST).write_text((digits_teacher.path / MANIFEST).read_text())
    with pytest.raises(ModelLoadError, match="has no model.safetensors"):
        load_variant(tmp_path)


def _strict_loads(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_manifests_are_strict_json(digits_teacher, ctx):
    from optikit.passes.base import make_pass

    pruned = make_pass("prune-unstructured:amount=0.5,finetune_epochs=1").run(digits_teacher, ctx)
    for variant in (digits_teacher, pruned):
        manifest = _strict_loads((variant.path / MANIFEST).read_text())
        assert manifest["id"] == variant.id
    assert _strict_loads((pruned.path / MANIFEST).read_text())["report"]["finetune"][0]["val_loss"] > 0


def test_a_manifest_with_a_number_that_is_not_finite_is_never_written(digits_teacher, tmp_path):
    import dataclasses

    broken = dataclasses.replace(digits_teacher, report={"history": [{"epoch": 1, "val_loss": float("nan")}]})
    with pytest.raises(ValueError, match=r"nan at variant\.report\.history\[0\]\.val_loss"):
        broken.save_manifest(tmp_path)
    assert not (tmp_path / MANIFEST).exists()
