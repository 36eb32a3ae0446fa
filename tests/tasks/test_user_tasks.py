"""User datasets: files (CSV, TSV, JSON Lines, Parquet), save_to_disk folders, options, errors."""

from __future__ import annotations

import json

import datasets
import pytest

from fedzo.errors import ConfigError
from fedzo.tasks.registry import load_task
from fedzo.tasks.user import TaskOptions


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
    data = {"body": [f"t{i}" for i in range(30)], "title": ["x"] * 30, "verdict": ["spam" if i % 3 else "ham" for i in range(30)]}
    datasets.Dataset.from_dict(data).save_to_disk(tmp_path / "s")
    with pytest.raises(ConfigError, match="label column"):
        load_task(str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="text column"):
        load_task(str(tmp_path / "s"), options=TaskOptions(label_column="verdict"))
    task = load_task(str(tmp_path / "s"), options=TaskOptions(text_column="body", label_column="verdict"))
    assert task.label_names == ("ham", "spam")
    assert {e.label for e in task.train} == {0, 1}
    with pytest.raises(ConfigError, match="data.text_column: .nope. is not a column of"):
        load_task(str(tmp_path / "s"), options=TaskOptions(text_column="nope", label_column="verdict"))


def test_csv_with_string_labels_names_verbalizer_and_template(tmp_path):
    lines = ["review,sentiment"] + [f"\"film {i}, fine\",{'good' if i % 2 else 'bad'}" for i in range(60)]
    (tmp_path / "reviews.csv").write_text("\n".join(lines) + "\n")
    opts = TaskOptions(label_names=("bad", "good"), verbalizer=("no", "yes"), template="Review: {text}\nLiked:",
                       dev_size=6, test_size=12)
    task = load_task(str(tmp_path / "reviews.csv"), seed=1, options=opts)
    assert task.label_names == ("bad", "good")
    assert (len(task.train), len(task.dev), len(task.test)) == (42, 6, 12)
    assert task.train[0].text.startswith("film ") and task.train[0].text.endswith(", fine")
    assert all(e.label == int(e.text.split()[1].rstrip(",")) % 2 for e in task.train)
    prompt = task.prompt()
    assert (prompt.name, prompt.template, prompt.verbalizer) == ("custom", "Review: {text}\nLiked:", (" no", " yes"))


def test_folder_of_split_files_keeps_the_splits(tmp_path):
    def write(name: str, rows: list[tuple[str, int]]) -> None:
        (tmp_path / name).write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))

    write("train.jsonl", [(f"tr{i}", i % 3) for i in range(30)])
    write("dev.jsonl", [("d0", 0), ("d1", 1), ("d2", 2)])
    write("test.jsonl", [("t0", 2), ("t1", 1)])
    task = load_task(str(tmp_path), options=TaskOptions(label_names=("a", "b", "c")))
    assert task.label_names == ("a", "b", "c")
    assert (len(task.train), [e.text for e in task.dev], [e.label for e in task.test]) == (30, ["d0", "d1", "d2"], [2, 1])


def test_tsv_and_parquet_files_are_read(tmp_path):
    (tmp_path / "a.tsv").write_text("text\tlabel\n" + "".join(f"x {i}, y\t{i % 2}\n" for i in range(40)))
    task = load_task(str(tmp_path / "a.tsv"))
    assert task.label_names == ("0", "1") and task.train[0].text.endswith(", y")
    datasets.Dataset.from_dict(_rows(40)).to_parquet(str(tmp_path / "b.parquet"))
    assert len(load_task(str(tmp_path / "b.parquet")).train) == 28


def test_bad_options_name_the_key_and_what_is_allowed(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"t{i},{i % 3}\n" for i in range(30)))
    with pytest.raises(ConfigError, match=r"data.label_names: .*holds the values \[0, 1, 2\].*indices they would "
                                          r"need 0..1; write the mapping as `label_map: \{0: a, 1: b, 2: name2\}|"
                                          r"label_map: \{0: name0"):
        load_task(str(tmp_path / "d.csv"), options=TaskOptions(label_names=("a", "b")))
    with pytest.raises(ConfigError, match="data.verbalizer: 2 words for 3 labels"):
        load_task(str(tmp_path / "d.csv"), options=TaskOptions(verbalizer=("x", "y")))
    with pytest.raises(ConfigError, match=r"data.template: .* has no \{text\}"):
        load_task(str(tmp_path / "d.csv"), options=TaskOptions(template="Label:"))
    with pytest.raises(ConfigError, match="leave no training rows"):
        load_task(str(tmp_path / "d.csv"), options=TaskOptions(dev_size=10, test_size=20))
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "train.csv").write_text("text,label\na,0\n")
    (tmp_path / "mixed" / "test.jsonl").write_text('{"text": "b", "label": 1}\n')
    with pytest.raises(ConfigError, match="mixes file formats"):
        load_task(str(tmp_path / "mixed"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no data file"):
        load_task(str(tmp_path / "empty"))


def test_shipped_task_refuses_user_options():
    with pytest.raises(ConfigError, match="shipped task"):
        load_task("synthetic-sentiment", options=TaskOptions(label_column="y"))


def test_unknown_task_name_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a known task"):
        load_task(str(tmp_path / "does-not-exist"))


def _stars(n: int = 60) -> list[tuple[str, int | None]]:
    """Star ratings 1/3/5, every seventh row unlabelled."""
    return [(f"film {i}", None if i % 7 == 6 else (1, 3, 5)[i % 3]) for i in range(n)]


def _write_stars(tmp_path, fmt: str):
    rows = _stars()
    if fmt == "csv":  # an integer column with empty cells: pandas reads it as floats
        path = tmp_path / "stars.csv"
        path.write_text("text,stars\n" + "".join(f"{t},{'' if y is None else y}\n" for t, y in rows))
    elif fmt == "jsonl":
        path = tmp_path / "stars.jsonl"
        path.write_text("".join(json.dumps({"text": t, "stars": y}) + "\n" for t, y in rows))
    elif fmt == "parquet":
        import pandas as pd

        path = tmp_path / "stars.parquet"
        pd.DataFrame({"text": [t for t, _ in rows], "stars": pd.array([y for _, y in rows], dtype="Int64")}
                     ).to_parquet(path)
    else:  # a folder of split files, string labels
        path = tmp_path / "folder"
        path.mkdir()
        for name, part in (("train", rows[:40]), ("dev", rows[40:50]), ("test", rows[50:])):
            (path / f"{name}.csv").write_text("text,stars\n" + "".join(f"{t},{'' if y is None else y}\n"
                                                                         for t, y in part))
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "folder"])
def test_star_ratings_map_to_names_the_same_in_every_format(tmp_path, fmt):
    path = _write_stars(tmp_path, fmt)
    opts = TaskOptions(label_column="stars", dev_size=6, test_size=9)
    found = load_task(str(path), options=opts)
    assert found.label_names == ("1", "3", "5")  # the values found, not 6 index classes
    by_value = load_task(str(path), options=TaskOptions(label_column="stars", label_names=("1", "3", "5"), dev_size=6,
                                                        test_size=9))
    mapped = load_task(str(path), options=TaskOptions(label_column="stars", label_map={1: "bad", 3: "ok", 5: "good"},
                                                      dev_size=6, test_size=9))
    assert mapped.label_names == ("bad", "ok", "good")
    stars = dict(_stars())
    for task in (found, by_value, mapped):
        assert len(task.train) + len(task.dev) + len(task.test) == sum(y is not None for y in stars.values())
        assert all((1, 3, 5)[e.label] == stars[e.text] for e in task.train)
    with pytest.raises(ConfigError, match=r"holds the values \[1, 3, 5\].*label_map: \{1: bad, 3: ok, 5: good\}"):
        load_task(str(path), options=TaskOptions(label_column="stars", label_names=("bad", "ok", "good")))
    with pytest.raises(ConfigError, match=r"data.label_map: .* values \[5\] that the map does not name"):
        load_task(str(path), options=TaskOptions(label_column="stars", label_map={1: "bad", 3: "ok"}))


def test_one_class_or_a_class_without_training_rows_is_refused(tmp_path, capsys):
    (tmp_path / "one.csv").write_text("text,label\n" + "".join(f"t{i},pos\n" for i in range(30)))
    with pytest.raises(ConfigError, match=r"carry 1 class\(es\) \['pos'\]; a classifier needs at least two"):
        load_task(str(tmp_path / "one.csv"))
    (tmp_path / "two.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(30)))
    with pytest.raises(ConfigError, match=r"the class\(es\) \['c'\] have no training rows"):
        load_task(str(tmp_path / "two.csv"), options=TaskOptions(label_names=("a", "b", "c")))
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(30)))
    (split / "dev.csv").write_text("text,label\nd0,0\nd1,1\n")
    (split / "test.csv").write_text("text,label\ne0,0\ne1,0\n")
    capsys.readouterr()
    load_task(str(split))
    assert "the test split has no rows of the class(es) ['1']" in capsys.readouterr().err


def test_unreadable_files_say_why(tmp_path):
    """Empty, header-only, binary, Latin-1 and UTF-16 files: the cause, not the reader's generic error."""
    cases = {
        "empty.csv": (b"", r"is empty \(0 bytes\): no columns, no rows"),
        "header.csv": (b"text,label\n", r"has a header \('text,label'\) but no rows"),
        "binary.csv": (b"PK\x03\x04\x00\x00junk", r"not a CSV or TSV text file: it holds binary data \(a NUL byte at byte 4"),
        "latin1.csv": ("text,label\ncafé,1\nthé,0\n".encode("latin-1"),
                       r"not valid utf-8 text: byte 14 \(0xe9\) cannot be decoded .*set data.encoding"),
        "utf16.csv": ("text,label\na,1\nb,0\n".encode("utf-16"), r"is UTF-16 text .* set data.encoding: utf-16"),
        "blank.csv": (b"text,label\na,\nb,\n", r"no rows left after dropping the unlabelled ones"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ConfigError, match=message):
            load_task(str(tmp_path / name))
    rows = "text,label\n" + "".join(f"café {i},{i % 2}\n" for i in range(40))
    (tmp_path / "ok.csv").write_bytes(rows.encode("latin-1"))
    task = load_task(str(tmp_path / "ok.csv"), options=TaskOptions(encoding="latin-1"))
    assert task.train[0].text.startswith("café")
    (tmp_path / "ok16.csv").write_bytes(rows.encode("utf-16"))
    assert len(load_task(str(tmp_path / "ok16.csv"), options=TaskOptions(encoding="utf-16")).train) == 28
    with pytest.raises(ConfigError, match="data.encoding: 'klingon' is not an encoding"):
        load_task(str(tmp_path / "ok.csv"), options=TaskOptions(encoding="klingon"))
