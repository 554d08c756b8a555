"""Cell records → one Results per teacher×device group (the baseline cell's row is the group's baseline)."""
from __future__ import annotations

import dataclasses
from typing import Any

from optikit.harness.records import Environment, Task
from optikit.harness.results import Results, VariantResult
from optikit.matrix.spec import BASELINE, Matrix


def _failed(record: dict[str, Any], is_baseline: bool = False) -> VariantResult:
    return VariantResult(id=f"cell-{record.get('key', '?')}", name=record["variant"], format="?",
                         lineage=tuple(record.get("chain", [])), parent=None, status="failed",
                         error=record.get("error") or "failed", is_baseline=is_baseline)


def group_results(matrix: Matrix, group: str, records: list[dict[str, Any]]) -> Results:
    """The rows of one group, named as the matrix names them, with the matrix settings kept for the report."""
    base_record = next((r for r in records if r["variant"] == BASELINE), None)
    rows: list[VariantResult] = []
    meta: dict[str, Any] = {}
    for r in records:
        if r["status"] == "ok" and "row" in r:
            # Records written by another harness version may carry fields this one lacks (or miss new ones).
            row = dataclasses.replace(VariantResult.from_dict(r["row"]), name=r["variant"],
                                      is_baseline=r["variant"] == BASELINE)
        else:
            row = _failed(r, r["variant"] == BASELINE)
        rows.append(row)
        meta[r["variant"]] = {"key": r.get("key"), "chain": r.get("chain", []), "seconds": r.get("seconds"),
                              "variant_path": r.get("variant_path")}
    ok_base = base_record is not None and base_record["status"] == "ok"
    source: dict[str, Any] = (base_record if ok_base and base_record is not None
                              else next((r for r in records if r.get("status") == "ok"), {}))
    baseline_id = rows[0].id if rows else "none"
    if ok_base:
        baseline_id = next(v.id for v in rows if v.is_baseline)
    settings = dict(source.get("settings") or {})
    settings["matrix"] = {"name": matrix.name, "source": matrix.source, "group": group, "cells": meta,
                          "batch_sizes": list(matrix.batch_sizes), "f1_budget_points": matrix.f1_budget_points}
    return Results(variants=rows, baseline_id=baseline_id, task=Task.from_dict(source.get("task") or {}),
                   environment=Environment.from_dict(source.get("environment") or {}), settings=settings)
