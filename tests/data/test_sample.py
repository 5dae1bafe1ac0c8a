"""`data sample`: seeded subsets of generated tasks, spread over tables, levels interleaved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notebook_agent.data.tables.sample import sample_tasks
from notebook_agent.tasks.formats.dabench import load_dabench


@pytest.fixture
def split(tmp_path) -> Path:
    """12 tables x 3 levels x 2 tasks = 72 tasks in the dabench layout."""
    d = tmp_path / "train"
    (d / "tables").mkdir(parents=True)
    with open(d / "questions.jsonl", "w") as q, open(d / "labels.jsonl", "w") as lab:
        for t in range(12):
            (d / "tables" / f"t{t}.csv").write_text(f"x\n{t}\n")
            for level in ("easy", "medium", "hard"):
                for k in range(2):
                    tid = f"t{t}-{level}-{k}"
                    q.write(json.dumps({"id": tid, "question": f"Mean of x in t{t}?", "constraints": "", "concepts": [],
                                        "format": "@mean_x[value]", "file_name": f"t{t}.csv", "level": level,
                                        "table": f"t{t}"}) + "\n")
                    lab.write(json.dumps({"id": tid, "common_answers": [["mean_x", str(t)]]}) + "\n")
    return d


def ids(d: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (d / "questions.jsonl").read_text().splitlines()]


def test_a_subset_spreads_over_tables_interleaves_levels_and_loads(split, tmp_path):
    report = sample_tasks(split, tmp_path / "s", n=9, seed=1)
    assert report["tasks"] == 9 and report["tables"] == 9  # one task per table
    tasks = load_dabench(tmp_path / "s").tasks
    assert [t.level for t in tasks] == ["easy", "medium", "hard"] * 3
    assert all(t.files[0].is_file() and t.files[0].parent == tmp_path / "s" / "tables" for t in tasks)
    assert not any(p.is_symlink() for p in (tmp_path / "s" / "tables").iterdir())  # copies, never links out
    labels = [json.loads(line)["id"] for line in (tmp_path / "s" / "labels.jsonl").read_text().splitlines()]
    assert labels == ids(tmp_path / "s")
    assert ids(tmp_path / "s") == ids(Path(sample_tasks(split, tmp_path / "again", n=9, seed=1)["out"]))  # seeded
    assert ids(tmp_path / "s") != ids(Path(sample_tasks(split, tmp_path / "other", n=9, seed=2)["out"]))


def test_disjoint_subsets_and_the_per_table_cap(split, tmp_path):
    a = sample_tasks(split, tmp_path / "a", n=12, seed=0)
    b = sample_tasks(split, tmp_path / "b", n=100, seed=0, exclude=[tmp_path / "a"])
    assert not set(ids(tmp_path / "a")) & set(ids(tmp_path / "b"))
    assert a["tables"] == 12 and b["tasks"] == 12  # one per table is all that is left room for
    c = sample_tasks(split, tmp_path / "c", n=100, per_table=6, seed=0)
    assert c["tasks"] == 72 and c["by_level"] == {"easy": 24, "medium": 24, "hard": 24}


def test_bad_input_is_a_clear_error(split, tmp_path):
    from notebook_agent.cli import app

    sample_tasks(split, tmp_path / "s", n=3)
    with pytest.raises(FileExistsError, match="already holds"):
        sample_tasks(split, tmp_path / "s", n=3)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "questions.jsonl").write_text((split / "questions.jsonl").read_text() + "{oops\n")
    (broken / "labels.jsonl").write_text((split / "labels.jsonl").read_text())
    with pytest.raises(ValueError, match="bad JSON on line 73"):
        sample_tasks(broken, tmp_path / "b", n=3)
    with pytest.raises(FileNotFoundError, match="questions.jsonl"):
        sample_tasks(tmp_path / "nowhere", tmp_path / "t", n=3)
    everything = sample_tasks(split, tmp_path / "all", n=1000, per_table=6)
    assert everything["tasks"] == 72
    with pytest.raises(ValueError, match="no task left"):
        sample_tasks(split, tmp_path / "none", n=3, exclude=[tmp_path / "all"])
    result = CliRunner().invoke(app, ["data", "sample", str(split), "--out", str(tmp_path / "s"), "--n", "3"])
    assert result.exit_code == 2 and "already holds" in " ".join(result.output.split())
