"""In-memory models become teacher Variants without pickle: torch (builder), ONNX (no builder), Hugging Face."""
from __future__ import annotations

import numpy as np
import pytest

import optikit
from optikit.errors import ConfigError
from optikit.models import load_module


def _arch(teacher) -> dict:
    return {k: v for k, v in teacher.architecture.items() if k != "name"}


def test_from_module_with_builder_writes_a_reloadable_torch_variant(digits_teacher, tmp_path) -> None:
    module = load_module(digits_teacher)
    v = optikit.from_module(module, data="digits", builder="digits-cnn", builder_kwargs=_arch(digits_teacher),
                            home=tmp_path)
    assert v.format == "torch" and (v.path / "model.safetensors").is_file()
    assert not list(v.path.glob("*.pt")) and not list(v.path.glob("*.bin"))
    again = load_module(v)
    for (k, a), (_, b) in zip(module.state_dict().items(), again.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), k


def test_from_module_is_content_addressed(digits_teacher, tmp_path) -> None:
    module = load_module(digits_teacher)
    kw = {"data": "digits", "builder": "digits-cnn", "builder_kwargs": _arch(digits_teacher), "home": tmp_path}
    first, second = optikit.from_module(module, **kw), optikit.from_module(module, **kw)
    assert first.id == second.id and first.path == second.path


def test_from_module_without_builder_exports_onnx(digits_teacher, tmp_path) -> None:
    v = optikit.from_module(load_module(digits_teacher), data="digits", home=tmp_path)
    assert v.format == "onnx" and (v.path / "model.onnx").is_file()


def test_from_module_rejects_a_builder_that_does_not_rebuild_the_module(digits_teacher, tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not rebuild"):
        optikit.from_module(load_module(digits_teacher), data="digits", builder="digits-cnn",
                            builder_kwargs={"channels": (4, 4, 4)}, home=tmp_path)


def test_from_module_rejects_an_unregistered_callable_builder(digits_teacher, tmp_path) -> None:
    def my_net():  # a local function: no other process could rebuild it
        return None

    with pytest.raises(ConfigError, match="not a registered architecture"):
        optikit.from_module(load_module(digits_teacher), data="digits", builder=my_net, home=tmp_path)


def test_from_module_rejects_label_names_in_another_order(digits_teacher, tmp_path) -> None:
    with pytest.raises(ConfigError, match="sorted names"):
        optikit.from_module(load_module(digits_teacher), data="digits", label_names=list("9876543210"), home=tmp_path)


def test_compress_takes_an_in_memory_module(digits_teacher, tmp_path) -> None:
    int8 = optikit.compress(load_module(digits_teacher), ["quantize:mode=dynamic"], data="digits",
                            builder="digits-cnn", builder_kwargs=_arch(digits_teacher), out=tmp_path / "v")
    assert int8.format == "onnx" and [s.pass_name for s in int8.lineage] == ["export-onnx", "quantize"]


def test_compress_without_data_for_a_module_is_one_line_error(digits_teacher) -> None:
    with pytest.raises(ConfigError, match="needs data="):
        optikit.compress(load_module(digits_teacher), ["quantize"])


def test_from_module_saves_a_hugging_face_model_with_its_tokenizer(tiny_bert_checkpoint, text_csv, tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint))
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_checkpoint))
    v = optikit.from_module(model, data=text_csv, text_cols=["title", "description"], label_col="tag",
                            tokenizer=tok, max_length=32, home=tmp_path)
    assert v.format == "hf" and (v.path / "model.safetensors").is_file() and (v.path / "tokenizer.json").is_file()
    assert v.task.label_names == ("language", "ops", "vision")
    assert load_module(v).config.num_labels == 3


def test_from_module_refuses_a_hugging_face_model_without_its_tokenizer(tiny_bert_checkpoint, text_csv) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint))
    with pytest.raises(ConfigError, match="tokenizer"):
        optikit.from_module(model, data=text_csv, text_cols=["title"], label_col="tag")
