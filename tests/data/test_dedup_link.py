"""Dedup (planted near-duplicates found, distinct kept), data-file linking, record readers."""

from __future__ import annotations

import ast
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document

from notebook_agent.data import (
    DataFileLinker,
    DedupConfig,
    IpynbFolderReader,
    LinkConfig,
    MinhashNotebookDedup,
    NotebookRecordsReader,
    find_reads,
)


def by_name(corpus, *names):
    nbdir, _, _ = corpus
    docs = {d.id.removesuffix(".ipynb"): d for d in IpynbFolderReader(str(nbdir))()}
    return [docs[n] for n in names]


def test_dedup_drops_planted_near_duplicate_and_keeps_distinct(corpus):
    docs = by_name(corpus, "good_sales", "good_weather", "near_dup_sales", "deep_learning")
    step = MinhashNotebookDedup()
    kept = [d.id for d in step(iter(docs))]
    assert kept == ["good_sales.ipynb", "good_weather.ipynb", "deep_learning.ipynb"]
    assert step.stats["dropped_near_duplicate"].total == 1
    assert step.stats["forwarded"].total == 3


def test_dedup_threshold_is_configuration(corpus):
    docs = by_name(corpus, "good_sales", "near_dup_sales")
    kept = list(MinhashNotebookDedup(DedupConfig(threshold=0.99))(iter(docs)))
    assert len(kept) == 2


def code(text: str) -> list[ast.Module]:
    return [ast.parse(text)]


def test_find_reads_static_paths():
    src = """
import os, pandas as pd, numpy as np
from pathlib import Path
DATA = 'input'
a = pd.read_csv('sales.csv')
b = pd.read_excel(os.path.join(DATA, 'book.xlsx'), sheet_name=0)
c = np.load(f'{DATA}/arr.npy')
d = pd.read_parquet(path=Path(DATA) / 'p.parquet')
e = open('notes.txt').read()
open('out.txt', 'w').write('x')
f = pd.read_json('https://example.com/x.json')
g = pd.read_csv(some_function())
import json
h = json.load(open('cfg.json', 'r'))
"""
    paths, dynamic = find_reads(code(src))
    assert paths == ["sales.csv", "input/book.xlsx", "input/arr.npy", "input/p.parquet", "notes.txt",
                     "https://example.com/x.json", "cfg.json"]
    assert dynamic == 1


def test_linker_resolves_against_data_root(corpus):
    _, data, _ = corpus
    docs = by_name(corpus, "good_sales", "good_weather", "tiny")
    step = DataFileLinker(LinkConfig(data_root=str(data)))
    out = {d.id: d.metadata for d in step(iter(docs))}
    sales = out["good_sales.ipynb"]
    assert sales["files"] == [{"ref": "sales.csv", "path": str(data / "sales.csv")}]
    assert sales["executable"] is True
    assert out["tiny.ipynb"]["files"] == [] and out["tiny.ipynb"]["executable"] is True
    assert step.stats["files_resolved"].total == 2


def test_linker_marks_missing_and_can_drop(corpus):
    docs = by_name(corpus, "good_sales", "good_weather")
    step = DataFileLinker(LinkConfig(search_notebook_dir=False))
    out = list(step(iter(docs)))
    assert [d.metadata["executable"] for d in out] == [False, False]
    assert step.stats["files_missing"].total == 2
    dropper = DataFileLinker(LinkConfig(search_notebook_dir=False, drop_not_executable=True))
    assert list(dropper(iter(by_name(corpus, "good_sales")))) == []
    assert dropper.stats["dropped_not_executable"].total == 1


def test_records_jsonl_and_parquet_keep_metadata(corpus, tmp_path):
    _, data, paths = corpus
    good = json.loads(paths["good_sales"].read_text())
    recs = tmp_path / "recs"
    recs.mkdir()
    with gzip.open(recs / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "r1", "notebook": good, "data_files": [str(data / "sales.csv")], "repo": "x/y"}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "r2", "notebook": paths["truncated"].read_text()}) + "\n")
        f.write(json.dumps({"id": "r3", "other": 1}) + "\n")
    pq.write_table(pa.table({"id": ["p1"], "notebook": [json.dumps(good)], "files": [[str(data / "sales.csv")]]}),
                   recs / "b.parquet")
    reader = NotebookRecordsReader(str(recs))
    docs = list(reader())
    assert [d.id for d in docs] == ["r1", "r2", "p1"]
    assert docs[0].metadata["repo"] == "x/y" and docs[0].metadata["data_files"] == [str(data / "sales.csv")]
    assert reader.stats["read_errors"].total == 2  # the bad line and the record without a notebook
    # the shipped data-file list resolves the read, with no data root
    linked = list(DataFileLinker(LinkConfig(search_notebook_dir=False))(iter([docs[0], docs[2]])))
    assert [d.metadata["executable"] for d in linked] == [True, True]
    # the truncated notebook reaches the validity filter (counted there), it does not stop the reader
    assert docs[1].text.startswith("{")


def test_linker_survives_bad_notebook():
    step = DataFileLinker()
    out = list(step(iter([Document(text="{oops", id="bad"), Document(text='{"cells": [], "nbformat": 4}', id="ok")])))
    assert [d.id for d in out] == ["ok"]
    assert step.stats["dropped_invalid_json"].total == 1


def test_linker_never_resolves_outside_its_roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.csv").write_text("a\n1\n")
    (tmp_path / "secret.csv").write_text("x\n")
    cells = [{"cell_type": "code", "execution_count": 1, "outputs": [], "metadata": {},
              "source": "import pandas as pd\na = pd.read_csv('ok.csv')\nb = pd.read_csv('../secret.csv')\n"
                        f"c = open('{tmp_path / 'secret.csv'}').read()"}]
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {}}
    doc = Document(text=json.dumps(nb), id="x", metadata={"source": str(root / "sub" / "x.ipynb")})
    (out,) = DataFileLinker(LinkConfig(data_root=str(root), search_notebook_dir=False))(iter([doc]))
    paths = {f["ref"]: f["path"] for f in out.metadata["files"]}
    assert paths["ok.csv"] == str(root / "sub" / "ok.csv")
    assert paths["../secret.csv"] is None and paths[str(tmp_path / "secret.csv")] is None
    assert out.metadata["executable"] is False
