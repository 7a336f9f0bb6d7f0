"""Render the table reference (docs/tables.md) from schemas/.

``python -m mirflow.catalog.docs > docs/tables.md``; a test fails when the
committed page and the schema files disagree.
"""

from __future__ import annotations

import sys

from mirflow.catalog.schema import load_schemas


def tables_markdown() -> str:
    """Markdown reference of every table: columns, types, units, descriptions."""
    lines = ["# Catalog tables", "",
             "Generated from `schemas/*.yaml` by `python -m mirflow.catalog.docs`; do not edit by hand.", ""]
    for name, spec in load_schemas().items():
        lines += [f"## `{name}/` (schema version {spec.version})", "", spec.description, ""]
        if spec.primary_key:
            lines += [f"Key: {', '.join(f'`{k}`' for k in spec.primary_key)}."
                      + (f" Partitioned in folders by `{spec.partition_by}`." if spec.partition_by else ""), ""]
        lines += ["| column | type | null | unit | description |", "|---|---|---|---|---|"]
        for c in spec.columns:
            desc = c.description.replace("|", "\\|")
            lines.append(f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.unit or ''} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(tables_markdown())
