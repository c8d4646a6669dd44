"""Task relationships: gradient cosine and lookahead affinity recorded during training, suggested
task groups, heatmaps and reports (`promptmux analyze`)."""

from promptmux.analysis.affinity import AffinityRecorder
from promptmux.analysis.groups import Grouping, best_groupings, recommend

__all__ = ["AffinityRecorder", "Grouping", "best_groupings", "recommend"]
