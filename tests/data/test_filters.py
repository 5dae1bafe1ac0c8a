"""Every filter on real notebooks (run in a real kernel, saved with nbformat)."""

from __future__ import annotations

from datatrove.data import Document

from notebook_agent.data import (
    DeepLearningFilter,
    ErrorOutputFilter,
    ExecutionOrderFilter,
    FilterConfig,
    IpynbFolderReader,
    KernelLanguageFilter,
    MinContentFilter,
    TeachingDatasetFilter,
    UnexecutedCellsFilter,
    ValidNotebookFilter,
    default_filters,
)


def docs(corpus):
    nbdir, _, _ = corpus
    return list(IpynbFolderReader(str(nbdir))())


def verdicts(step, documents):
    """{notebook name: True or drop reason}."""
    out = {}
    for d in documents:
        ok = step.filter(Document(text=d.text, id=d.id, metadata=dict(d.metadata)))
        out[d.id.removesuffix(".ipynb")] = True if ok is True else ok[1]
    return out


def test_reader_finds_all_notebooks(corpus):
    ds = docs(corpus)
    assert len(ds) == 12
    assert all(d.metadata["source"].endswith(".ipynb") for d in ds)


def test_valid_notebook_drops_truncated_json(corpus):
    v = verdicts(ValidNotebookFilter(), docs(corpus))
    assert v.pop("truncated") == "invalid_json"
    assert set(v.values()) == {True}


def test_valid_notebook_other_reasons():
    f = ValidNotebookFilter()
    assert f.filter(Document(text='{"cells": 3}', id="a")) == (False, "not_a_notebook")
    assert f.filter(Document(text='{"cells": [], "nbformat": 3}', id="b")) == (False, "bad_nbformat")


def test_kernel_language(corpus):
    v = verdicts(KernelLanguageFilter(), docs(corpus))
    assert v["r_kernel"] == "non_python_kernel"
    assert v["good_sales"] is True and v["good_weather"] is True


def test_execution_order(corpus):
    v = verdicts(ExecutionOrderFilter(), docs(corpus))
    assert v["out_of_order"] == "out_of_order"
    assert v["good_sales"] is True and v["unexecuted"] is True
    assert verdicts(ExecutionOrderFilter(FilterConfig(require_in_order=False)), docs(corpus))["out_of_order"] is True


def test_unexecuted(corpus):
    v = verdicts(UnexecutedCellsFilter(), docs(corpus))
    assert v["unexecuted"] == "unexecuted_cells"
    assert v["good_sales"] is True and v["out_of_order"] is True
    # 1 of 4 cells unexecuted passes a 0.25 threshold
    assert verdicts(UnexecutedCellsFilter(FilterConfig(max_unexecuted_fraction=0.25)), docs(corpus))["unexecuted"] is True


def test_error_outputs(corpus):
    v = verdicts(ErrorOutputFilter(), docs(corpus))
    assert v["erroring"] == "error_outputs"
    assert [k for k, x in v.items() if x is not True and k != "truncated"] == ["erroring"]
    assert verdicts(ErrorOutputFilter(FilterConfig(max_error_outputs=1)), docs(corpus))["erroring"] is True


def test_min_content(corpus):
    v = verdicts(MinContentFilter(), docs(corpus))
    assert v["tiny"] == "too_few_code_cells"
    assert v["good_sales"] is True
    strict = verdicts(MinContentFilter(FilterConfig(min_code_chars=10_000)), docs(corpus))
    assert strict["good_sales"] == "too_little_code"
    outputs = verdicts(MinContentFilter(FilterConfig(min_output_cells=10)), docs(corpus))
    assert outputs["good_sales"] == "too_few_outputs"


def test_teaching_datasets(corpus):
    v = verdicts(TeachingDatasetFilter(), docs(corpus))
    assert v["teaching"] == "teaching_titanic"
    assert [k for k, x in v.items() if x is not True and k != "truncated"] == ["teaching"]
    # the list is extendable
    extra = verdicts(TeachingDatasetFilter(FilterConfig(extra_teaching_datasets={"weather": r"weather\.csv"})),
                     docs(corpus))
    assert extra["good_weather"] == "teaching_weather"


def test_deep_learning_gpu_api(corpus):
    v = verdicts(DeepLearningFilter(), docs(corpus))
    assert v["deep_learning"] == "deep_learning"
    assert v["external_api"] == "external_api"
    assert v["good_sales"] is True and v["good_weather"] is True
    gpu = DeepLearningFilter().check({"cells": [{"cell_type": "code", "source": "x = df.values\nx = x.cuda()"}]})
    assert gpu == "gpu"


def test_default_chain_keeps_only_good(corpus):
    kept = docs(corpus)
    for f in default_filters():
        kept = list(f(iter(kept)))
    names = sorted(d.id.removesuffix(".ipynb") for d in kept)
    assert names == ["good_sales", "good_weather", "near_dup_sales"]


def test_filter_error_is_counted_not_raised():
    f = TeachingDatasetFilter()
    doc = Document(text="{}", id="odd", metadata={"_nb": {"cells": [{"cell_type": "code", "source": 5}]}})
    out = list(f(iter([doc])))
    # a source of 5 is coerced to the text "5": no teaching dataset in it, so the notebook is kept
    assert out == [doc] and f.stats["forwarded"].total == 1 and "dropped_filter_error" not in f.stats.stats
    weird = Document(text="{}", id="weird", metadata={"_nb": {"cells": None}})
    assert list(f(iter([weird]))) == []
    assert f.stats["dropped_filter_error"].total == 1
