"""The catalogue of analysis templates (see base.py for what a template is)."""

from .base import Cell, Plan, Template
from .easy import (
                     ColumnStat,
                     Correlation,
                     DistinctCount,
                     MissingCount,
                     MostCommon,
                     Skewness,
                     ThresholdCount,
)
from .hard import (
                     Classifier,
                     CorrelationTest,
                     FilterGroupRank,
                     LinearModel,
                     RatioFeature,
)
from .medium import (
                     BinCounts,
                     CorrelationStrength,
                     FillThenStats,
                     GroupTop,
                     IqrOutliers,
                     LinearTrend,
                     Normality,
                     ZscoreOutliers,
)

TEMPLATES: list[Template] = [
    ColumnStat(), MissingCount(), DistinctCount(), MostCommon(), Correlation(), ThresholdCount(), Skewness(),
    GroupTop(), IqrOutliers(), ZscoreOutliers(), Normality(), FillThenStats(), CorrelationStrength(), LinearTrend(),
    BinCounts(), FilterGroupRank(), RatioFeature(), LinearModel(), Classifier(), CorrelationTest(),
]

__all__ = ["TEMPLATES", "Cell", "Plan", "Template"]
