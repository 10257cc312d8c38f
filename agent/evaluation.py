"""Perception evaluation, kept importable here for code written against earlier versions: it lives in
:mod:`perception.evaluation` (manifests, UA/WA/macro-F1/confusion, WER, the eval report)."""

from perception.evaluation import (  # noqa: F401
    ManifestError,
    ManifestRow,
    classification_metrics,
    confusion_matrix,
    conversation_order,
    evaluate,
    format_report,
    metrics_from_confusion,
    normalize_text,
    read_manifest,
    word_error_rate,
)
