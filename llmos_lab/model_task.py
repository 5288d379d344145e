"""What a model does: one name per task, everywhere (loading, kernel, trainer, data sets, reports).

The scheduler's unit of work is already called ``Task``, so this is ``ModelTask``. Members are
strings (``ModelTask.CAUSAL_LM == "causal-lm"``), so configs, JSON and DataFrames keep plain
text; transformers' pipeline name "text-classification" is accepted as an alias of
"sequence-classification".
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ModelTask(str, Enum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    CAUSAL_LM = "causal-lm"
    MASKED_LM = "masked-lm"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def peft_task_type(self) -> str:
        """PEFT's ``TaskType`` name for this task."""
        return {"sequence-classification": "SEQ_CLS", "token-classification": "TOKEN_CLS",
                "causal-lm": "CAUSAL_LM", "masked-lm": "FEATURE_EXTRACTION"}[self.value]

    @property
    def is_classifier(self) -> bool:
        return self in CLASSIFIERS

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """The member a name or alias means; anything else unchanged (for the caller's check
        to report)."""
        if isinstance(value, str):
            value = _ALIASES.get(value, value)
            try:
                return cls(value)
            except ValueError:
                return value
        return value


_ALIASES = {"text-classification": "sequence-classification"}
CLASSIFIERS = (ModelTask.SEQUENCE_CLASSIFICATION, ModelTask.TOKEN_CLASSIFICATION)
