"""Binary detection metrics, bootstrap intervals, video aggregation, grouped evaluation and reports.

Typical use after scoring a test set into a predictions table (``path, label, p_fake`` + manifest
columns)::

    metrics = evaluate_predictions(predictions, bootstrap=1000)
    write_evaluation(run_dir / "eval" / safe_name(test_set), predictions, metrics)
    write_run_report(run_dir / "eval")

Definitions (EER, grouping rule, bootstrap) are in ``docs/metrics.md``.
"""

from __future__ import annotations

from mfclip.metrics._ranking import MetricsError
from mfclip.metrics.binary import (
    UndefinedMetricWarning,
    average_precision,
    compute_metrics,
    equal_error_rate,
    roc_auc,
    roc_curve,
)
from mfclip.metrics.bootstrap import Interval, bootstrap_ci
from mfclip.metrics.compare import compare_runs, render_comparison, write_comparison
from mfclip.metrics.grouped import DEFAULT_GROUP_BY, evaluate_predictions, evaluate_test_sets, metric_rows
from mfclip.metrics.report import (
    PredictionsError,
    find_predictions,
    load_predictions,
    read_metrics,
    safe_name,
    write_evaluation,
    write_predictions,
    write_run_report,
)
from mfclip.metrics.video import aggregate_by_video

__all__ = [
    "DEFAULT_GROUP_BY",
    "Interval",
    "MetricsError",
    "PredictionsError",
    "UndefinedMetricWarning",
    "aggregate_by_video",
    "average_precision",
    "bootstrap_ci",
    "compare_runs",
    "compute_metrics",
    "equal_error_rate",
    "evaluate_predictions",
    "evaluate_test_sets",
    "find_predictions",
    "load_predictions",
    "metric_rows",
    "read_metrics",
    "render_comparison",
    "roc_auc",
    "roc_curve",
    "safe_name",
    "write_comparison",
    "write_evaluation",
    "write_predictions",
    "write_run_report",
]
