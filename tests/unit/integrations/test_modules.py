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
    with pytest.raises(ConfigError, match="not the digits. order"):
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


TEXT = {"text_cols": ["title", "description"], "label_col": "tag"}
FAST_BENCH = {"batch_sizes": (1,), "min_seconds": 0.05, "min_iterations": 3, "speedup_rounds": 4, "resamples": 100,
              "suite": "none"}


def _permuted(text_teacher, order: tuple[str, ...]):
    """The trained text teacher with its outputs reordered to `order` (id2label too): the same classifier."""
    import torch

    model = load_module(text_teacher)
    rows = [list(text_teacher.task.label_names).index(n) for n in order]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[rows].clone())
        model.classifier.bias.copy_(model.classifier.bias[rows].clone())
    model.config.id2label = dict(enumerate(order))
    model.config.label2id = {n: i for i, n in enumerate(order)}
    return model


def test_from_module_takes_the_label_order_of_the_model_and_the_bench_lines_up(text_teacher, text_csv,
                                                                              tmp_path) -> None:
    import json

    import pandas as pd
    import torch
    from transformers import AutoTokenizer

    order = ("vision", "language", "ops")  # deliberately not sorted
    assert tuple(sorted(order)) != order and text_teacher.task.label_names == tuple(sorted(order))
    model = _permuted(text_teacher, order)
    v = optikit.from_module(model, data=text_csv, tokenizer=text_teacher.path, max_length=32, home=tmp_path, **TEXT)
    assert v.task.label_names == order and v.origin == "from_module"
    saved = json.loads((v.path / "config.json").read_text())
    assert [saved["id2label"][str(i)] for i in range(3)] == list(order)

    # The accuracy optikit measures is the accuracy of the model's own named predictions on the same rows.
    results = optikit.bench([v], threads=1, **FAST_BENCH)
    rows = pd.read_csv(text_csv).iloc[list(v.splits.test)]
    texts = (rows["title"].fillna("") + " " + rows["description"].fillna("")).str.strip().tolist()
    tok = AutoTokenizer.from_pretrained(str(text_teacher.path))
    with torch.no_grad():
        logits = model(**tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")).logits
    expected = float(np.mean([order[i] == tag for i, tag in zip(logits.argmax(-1).tolist(), rows["tag"], strict=True)]))
    assert expected > 0.5, "the teacher should beat chance, or a label mix-up could go unnoticed"
    assert results.variants[0].alignment.accuracy == pytest.approx(expected)
    assert results.task.examples == len(v.splits.test)


def test_from_module_names_both_label_lists_when_the_data_has_a_label_the_model_lacks(text_teacher, text_csv,
                                                                                      tmp_path) -> None:
    import pandas as pd

    from optikit.errors import DataError

    frame = pd.read_csv(text_csv)
    frame.loc[frame["tag"] == "ops", "tag"] = "robotics"
    data = tmp_path / "relabelled.csv"
    frame.to_csv(data, index=False)
    with pytest.raises(DataError) as err:
        optikit.from_module(_permuted(text_teacher, ("vision", "language", "ops")), data=data,
                            tokenizer=text_teacher.path, home=tmp_path, **TEXT)
    message = str(err.value)
    assert "\n" not in message and "robotics" in message
    assert "['vision', 'language', 'ops']" in message and "['language', 'robotics', 'vision']" in message


def test_from_module_never_writes_to_the_users_model_or_config(tiny_bert_checkpoint, text_csv, tmp_path) -> None:
    import hashlib

    from transformers import AutoModelForSequenceClassification

    config_file = tiny_bert_checkpoint / "config.json"
    digest = hashlib.sha256(config_file.read_bytes()).hexdigest()
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint)).train()
    before = model.config.to_dict()
    v = optikit.from_module(model, data=text_csv, tokenizer=tiny_bert_checkpoint, max_length=32, home=tmp_path,
                            **TEXT)
    assert v.path != tiny_bert_checkpoint and (v.path / "config.json").is_file()
    assert model.config.to_dict() == before  # save_pretrained writes into the config it saves: a copy's
    assert model.training, "the user's module gets its training mode back"
    assert hashlib.sha256(config_file.read_bytes()).hexdigest() == digest


def test_from_module_with_generic_labels_takes_label_names_in_output_order(tiny_bert_checkpoint, text_csv,
                                                                          tmp_path) -> None:
    import json

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint))
    assert model.config.id2label[0] == "LABEL_0"
    order = ["ops", "vision", "language"]
    v = optikit.from_module(model, data=text_csv, tokenizer=tiny_bert_checkpoint, label_names=order, max_length=32,
                            home=tmp_path, **TEXT)
    assert list(v.task.label_names) == order
    assert json.loads((v.path / "config.json").read_text())["label2id"] == {n: i for i, n in enumerate(order)}
    assert model.config.id2label[0] == "LABEL_0"
    with pytest.raises(ConfigError, match="names 2 labels but the model has 3 outputs"):
        optikit.from_module(model, data=text_csv, tokenizer=tiny_bert_checkpoint, label_names=order[:2],
                            home=tmp_path, **TEXT)


def test_from_module_refuses_label_names_that_contradict_id2label(text_teacher, text_csv, tmp_path) -> None:
    with pytest.raises(ConfigError, match="differ from the model's id2label"):
        optikit.from_module(_permuted(text_teacher, ("vision", "language", "ops")), data=text_csv,
                            tokenizer=text_teacher.path, label_names=["language", "ops", "vision"], home=tmp_path,
                            **TEXT)


def test_from_module_measures_on_the_users_test_file_or_split_column(tiny_bert_checkpoint, text_csv,
                                                                    tmp_path) -> None:
    import pandas as pd
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_checkpoint))
    frame = pd.read_csv(text_csv)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:70].to_csv(train, index=False)
    frame.iloc[70:].to_csv(test, index=False)
    kw = {"tokenizer": tiny_bert_checkpoint, "max_length": 32, "home": tmp_path / "home", **TEXT}
    seeded = optikit.from_module(model, data=train, **kw)
    given = optikit.from_module(model, data=train, test_data=test, **kw)
    assert seeded.splits.rule == "seeded" and given.splits.rule == "test-file"
    assert given.splits.test == tuple(range(70, 90)) and given.data.test_sha256
    assert given.id != seeded.id  # the split rule and the test file's hash are part of the id

    frame["part"] = ["test" if i % 5 == 0 else "validation" if i % 5 == 1 else "train" for i in range(len(frame))]
    marked = tmp_path / "marked.csv"
    frame.to_csv(marked, index=False)
    by_col = optikit.from_module(model, data=marked, split_col="part", **kw)
    assert by_col.splits.rule == "split-col" and len(by_col.splits.test) == 18
    with pytest.raises(ConfigError, match="pass one of them"):
        optikit.from_module(model, data=marked, split_col="part", test_data=test, **kw)


def test_from_module_checks_its_onnx_export_like_export_onnx(digits_teacher, tmp_path, monkeypatch) -> None:
    import optikit.passes._ort_quant as ort_quant
    from optikit.errors import PassError

    wrong = ort_quant.session_logits

    def shifted(path, batches, threads):  # an export whose logits drifted from the module's
        return wrong(path, batches, threads) + 1.0

    monkeypatch.setattr(ort_quant, "session_logits", shifted)
    with pytest.raises(PassError, match=r"the ONNX export differs from \w+: max \|Δlogit\| 1\.00e\+00"):
        optikit.from_module(load_module(digits_teacher), data="digits", home=tmp_path)
    assert not list(tmp_path.rglob("variant.json"))
