"""The prep report: split sizes overall and per class, class proportions, missing classes.

A class too small to reach every split is a *warning* here, never silently dropped; a split
that training or evaluation cannot use at all (train empty or with fewer than 2 classes, val
or test empty) is a *problem*, and :meth:`SplitReport.raise_if_unusable` fails prep on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datawheel.errors import DatawheelError

__all__ = ["SPLIT_NAMES", "SplitReport"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitReport:
    """Rows per class and split (``counts[class, split]``, splits in SPLIT_NAMES order)."""

    classes: list[str]
    counts: np.ndarray
    seed: int
    val_fraction: float
    test_fraction: float

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    @property
    def sizes(self) -> dict[str, int]:
        """Rows in each split."""
        return {name: int(n) for name, n in zip(SPLIT_NAMES, self.counts.sum(axis=0), strict=True)}

    @property
    def targets(self) -> dict[str, float]:
        """The expected share of rows in each split."""
        val, test = self.val_fraction, self.test_fraction
        return {"train": 1.0 - val - test, "val": val, "test": test}

    @property
    def missing(self) -> dict[str, list[str]]:
        """Each class that has no rows in some split -> those splits."""
        out: dict[str, list[str]] = {}
        for cls, row in zip(self.classes, self.counts, strict=True):
            empty = [name for name, n in zip(SPLIT_NAMES, row, strict=True) if n == 0]
            if empty:
                out[cls] = empty
        return out

    @property
    def warnings(self) -> list[str]:
        """One line per class missing from a split."""
        lines = []
        for cls, empty in self.missing.items():
            row = self.counts[self.classes.index(cls)]
            if row.sum() == 0:
                lines.append(f"class {cls} has no rows at all, so none in {', '.join(empty)}")
                continue
            spread = ", ".join(f"{n} {name}" for name, n in zip(SPLIT_NAMES, row, strict=True))
            lines.append(
                f"class {cls} has no rows in {', '.join(empty)} ({row.sum()} rows: {spread})"
            )
        return lines

    @property
    def problems(self) -> list[str]:
        """Why training or evaluation cannot use this split; empty when it can."""
        sizes = self.sizes
        out = []
        if sizes["train"] == 0:
            out.append("the train split has no rows")
        else:
            present = [c for c, n in zip(self.classes, self.counts[:, 0], strict=True) if n > 0]
            if len(present) < 2:
                out.append(f"the train split holds only class {present[0]}, training needs 2+")
        out += [f"the {name} split has no rows" for name in ("val", "test") if sizes[name] == 0]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        s = self.sizes
        line = f"split {s['train']}/{s['val']}/{s['test']} (split seed {self.seed})"
        if self.missing:
            line += f"; {len(self.missing)} class(es) missing from a split"
        if self.problems:
            line += f"; unusable: {'; '.join(self.problems)}"
        return line

    def raise_if_unusable(self) -> None:
        problems = self.problems
        if problems:
            shares = "/".join(f"{self.targets[n]:.0%}" for n in SPLIT_NAMES)
            raise DatawheelError(
                f"cannot split {self.rows} rows for training: {'; '.join(problems)}",
                f"add rows for more classes (each row goes to train/val/test with probability "
                f"{shares} by its content hash) and validate the dataset before prep",
            )

    def markdown(self, dataset: str = "") -> str:
        status = "PASSED" if self.ok else "FAILED"
        test, val = self.test_fraction, self.val_fraction
        lines = [f"# Prep report: {status}", ""]
        if dataset:
            lines += [f"Dataset `{dataset}`, {self.rows} rows.", ""]
        lines += [
            f"Each row goes to a split by a fixed threshold on its content hash (split seed "
            f"{self.seed}): u < {test:g} test, u < {test + val:g} val, else train. A row never "
            "changes split as the dataset grows or shrinks, and identical rows share a split.",
            "",
        ]
        if self.problems:
            lines += ["## Problems", ""]
            lines += [f"- {p}" for p in self.problems] + [""]
        lines += _sizes_table(self) + _class_tables(self)
        lines += ["## Warnings", ""]
        warnings = self.warnings
        if warnings:
            lines += [f"- {w}" for w in warnings]
        else:
            lines.append("None: every class has rows in train, val and test.")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _sizes_table(report: SplitReport) -> list[str]:
    sizes, targets, total = report.sizes, report.targets, report.rows
    lines = ["## Split sizes", "", "| split | rows | share | target |", "|---|---:|---:|---:|"]
    for name in SPLIT_NAMES:
        lines.append(
            f"| {name} | {sizes[name]} | {_pct(sizes[name], total)} | {targets[name]:.0%} |"
        )
    return [*lines, f"| all | {total} | {_pct(total, total)} | 100% |", ""]


def _class_tables(report: SplitReport) -> list[str]:
    counts, sizes, total = report.counts, report.sizes, report.rows
    head = "| class | all | " + " | ".join(SPLIT_NAMES) + " |"
    rule = "|---|---:|" + "---:|" * len(SPLIT_NAMES)
    per_class = ["## Rows per class", "", head, rule]
    shares = [
        "## Class proportions per split",
        "",
        "Each class's share of the rows of each split; `all` is its share of the dataset.",
        "",
        head,
        rule,
    ]
    for cls, row in zip(report.classes, counts, strict=True):
        per_class.append(
            f"| {_cell(cls)} | {row.sum()} | " + " | ".join(str(n) for n in row) + " |"
        )
        cells = [_pct(n, sizes[name]) for name, n in zip(SPLIT_NAMES, row, strict=True)]
        shares.append(f"| {_cell(cls)} | {_pct(row.sum(), total)} | " + " | ".join(cells) + " |")
    return [*per_class, "", *shares, ""]
