"""What every eval task returns: per-setting metrics, a summary per task, and every sample for `--export`.

Metric names follow `eval/<task>/<setting>/<metric>` (MLflow keys); the task's summary is `eval/<task>/<metric>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvalResult:
    task: str
    settings: list[dict] = field(default_factory=list)  # one dict per setting: "setting", its parameters, metrics
    summary: dict[str, float] = field(default_factory=dict)  # task-level metrics
    samples: list[dict] = field(default_factory=list)  # prompt text, expected answer, output, metadata
    info: dict = field(default_factory=dict)  # what was run: options, haystack source, timings
    metric_keys: tuple[str, ...] = ("acc",)  # the metric columns of `settings`

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: eval/<task>/<setting>/<metric> and eval/<task>/<metric>."""
        out = {f"eval/{self.task}/{row['setting']}/{key}": float(row[key])
               for row in self.settings for key in self.metric_keys if key in row}
        out |= {f"eval/{self.task}/{key}": float(value) for key, value in self.summary.items()}
        return out

    def to_dict(self) -> dict:
        return {"task": self.task, "summary": self.summary, "settings": self.settings, "info": self.info}

    def export(self, path: str | Path) -> int:
        """Every sample as one JSON line; written beside and renamed, so a kill leaves no half file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for sample in self.samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
        tmp.replace(path)
        return len(self.samples)


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def exact_match(output: str, expected: str) -> bool:
    """The output, leading whitespace dropped, starts with the expected answer followed by no further letter or
    digit ("4521." matches 4521, "45210" does not). Case-insensitive."""
    text, want = output.lstrip().lower(), expected.strip().lower()
    if not text.startswith(want):
        return False
    rest = text[len(want):]
    return not (rest[:1].isalnum())
