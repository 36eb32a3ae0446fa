"""User datasets: a folder written by datasets' save_to_disk, column detection, errors."""

from __future__ import annotations

import datasets
import pytest

from fedzo.errors import ConfigError
from fedzo.tasks.registry import load_task


def _rows(n: int) -> dict[str, list]:
    return {"sentence": [f"text {i}" for i in range(n)], "label": [i % 2 for i in range(n)], "idx": list(range(n))}


def test_dataset_saved_to_disk_is_split_and_labelled(tmp_path):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]), "idx": datasets.Value("int32")}
    )
    datasets.Dataset.from_dict(_rows(100), features=features).save_to_disk(tmp_path / "mine")
    task = load_task(str(tmp_path / "mine"), seed=0)
    assert task.label_names == ("neg", "pos")
    assert (len(task.train), len(task.dev), len(task.test)) == (70, 10, 20)
    assert task.test == load_task(str(tmp_path / "mine"), seed=0).test
    assert task.prompt().verbalizer == (" neg", " pos")


def test_dataset_dict_keeps_its_splits_and_drops_unlabelled_rows(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}),
            "validation": datasets.Dataset.from_dict({"text": ["e", "f"], "label": [1, 0]}),
            "test": datasets.Dataset.from_dict({"text": ["g", "h", "i"], "label": [1, -1, 0]}),
        }
    )
    dd.save_to_disk(tmp_path / "dd")
    task = load_task(str(tmp_path / "dd"))
    assert [e.text for e in task.train] == ["a", "b", "c", "d"]
    assert [e.text for e in task.test] == ["g", "i"]
    assert len(task.dev) == 2


def test_string_labels_and_explicit_columns(tmp_path):
    data = {"body": [f"t{i}" for i in range(30)], "title": ["x"] * 30, "y": ["spam" if i % 3 else "ham" for i in range(30)]}
    datasets.Dataset.from_dict(data).save_to_disk(tmp_path / "s")
    with pytest.raises(ConfigError, match="label column"):
        load_task(str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="text column"):
        load_task(str(tmp_path / "s"), label_column="y")
    task = load_task(str(tmp_path / "s"), text_column="body", label_column="y")
    assert task.label_names == ("ham", "spam")
    assert {e.label for e in task.train} == {0, 1}
    with pytest.raises(ConfigError, match="not a column"):
        load_task(str(tmp_path / "s"), text_column="nope", label_column="y")


def test_unknown_task_name_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a known task"):
        load_task(str(tmp_path / "does-not-exist"))
