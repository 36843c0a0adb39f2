"""Bad-data accounting shared by the loader and its workers: what was skipped or converted, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_MAX_EXAMPLES = 20  # bad file names kept for the report


@dataclass
class LoaderStats:
    """Bad-data counts: ``skipped`` by reason, ``converted`` by kind, ``samples`` delivered, bad ``examples``."""

    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def converted_total(self) -> int:
        return sum(self.converted.values())

    def add(self, other: dict[str, Any] | LoaderStats) -> None:
        d = other.as_dict() if isinstance(other, LoaderStats) else other
        self.samples += int(d.get("samples", 0))
        for name in ("skipped", "converted"):
            mine = getattr(self, name)
            for k, v in d.get(name, {}).items():
                mine[k] = mine.get(k, 0) + int(v)
        room = _MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(list(d.get("examples", []))[:room])

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": dict(sorted(self.skipped.items())),
                "converted": dict(sorted(self.converted.items())), "skipped_total": self.skipped_total,
                "converted_total": self.converted_total, "examples": list(self.examples)}

    def __str__(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        return f"{self.samples} images; skipped: {fmt(self.skipped)}; converted: {fmt(self.converted)}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderStats:
        s = cls()
        s.add(d)
        return s


def _new_meta() -> dict[str, Any]:
    return {"samples": 0, "skipped": {}, "converted": {}, "examples": []}


def _skip(meta: dict[str, Any], reason: str, name: str, detail: str = "") -> None:
    meta["skipped"][reason] = meta["skipped"].get(reason, 0) + 1
    if len(meta["examples"]) < _MAX_EXAMPLES:
        meta["examples"].append(f"{name}: {reason}{' (' + detail[:200] + ')' if detail else ''}")
