"""``modelprint list``: every registry (residuals, methods, metrics, probes, zoo families, …) and its entries."""

from __future__ import annotations

from modelprint.cli.app import JsonFlag, JsonOutOpt, emit_json, fatal_errors, make_table, out, shown


def list_registries(as_json: JsonFlag = False, json_out: JsonOutOpt = None) -> None:
    """List what can be named: every registry's entries with a one-line description."""
    with fatal_errors():
        from modelprint.registry import all_registries

        listing = {kind: registry.describe() for kind, registry in all_registries().items()}
        emit_json(listing, as_json, json_out)
        if as_json:
            return
        table = make_table("registries", "kind", "name", "description")
        for kind, entries in listing.items():
            for name, doc in entries.items():
                table.add_row(shown(kind), shown(name), shown(doc))
        out.print(table)
