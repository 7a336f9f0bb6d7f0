"""Per-file measurements in worker processes, cached one JSON line per file (``fit_octave.py``, ``fit_key_ensemble.py``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def measure_cached(paths: Iterable[str], measure: Callable[[str], dict], cache: Path, *, done: dict[str, dict],
                   workers: int, what: str) -> dict[str, dict]:
    """``done`` with every path of ``paths`` it lacks measured by ``measure`` (a module-level function,
    run in ``workers`` processes), each result appended to ``cache`` as it comes, so that a killed
    run keeps what it measured."""
    todo = [p for p in dict.fromkeys(paths) if p not in done]
    if todo:
        print(f"measuring the {what} of {len(todo)} files", file=sys.stderr)
        with ProcessPoolExecutor(workers) as pool, cache.open("a") as f:
            for i, row in enumerate(pool.map(measure, todo, chunksize=2), 1):
                done[row["path"]] = row
                f.write(json.dumps(row) + "\n")
                f.flush()
                if i % 20 == 0:
                    print(f"  {i}/{len(todo)}", file=sys.stderr)
    return done
