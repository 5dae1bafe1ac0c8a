"""Mine real notebooks into tasks, traces and a training dataset (datatrove steps).

`run_pipeline(load_config("pipeline.yaml"))` or `notebook-agent data build pipeline.yaml`.
"""

from .build import STEPS, run_pipeline, step_blocks
from .config import PipelineConfig, load_config
from .dedup import DedupConfig, MinhashNotebookDedup
from .export import ExportConfig, ExportStep
from .filters import (
                      DeepLearningFilter,
                      ErrorOutputFilter,
                      ExecutionOrderFilter,
                      FilterConfig,
                      KernelLanguageFilter,
                      MinContentFilter,
                      TeachingDatasetFilter,
                      UnexecutedCellsFilter,
                      ValidNotebookFilter,
                      default_filters,
)
from .linking import DataFileLinker, LinkConfig, find_reads
from .llm.client import CachedClient, LLMConfig
from .llm.steps import EduScoreStep, QAGenerationStep, QAVerifyStep, RelevanceStep
from .readers import IpynbFolderReader, NotebookRecordsReader
from .traces import TraceConfig, TraceStep

__all__ = [
    "STEPS", "CachedClient", "DataFileLinker", "DedupConfig", "DeepLearningFilter", "EduScoreStep",
    "ErrorOutputFilter", "ExecutionOrderFilter", "ExportConfig", "ExportStep", "FilterConfig",
    "IpynbFolderReader", "KernelLanguageFilter", "LLMConfig", "LinkConfig", "MinContentFilter",
    "MinhashNotebookDedup", "NotebookRecordsReader", "PipelineConfig", "QAGenerationStep", "QAVerifyStep",
    "RelevanceStep", "TeachingDatasetFilter", "TraceConfig", "TraceStep", "UnexecutedCellsFilter",
    "ValidNotebookFilter", "default_filters", "find_reads", "load_config", "run_pipeline", "step_blocks",
]
