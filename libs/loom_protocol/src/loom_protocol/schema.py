"""JSON Schema export of the wire protocol.

Run ``python -m loom_protocol.schema`` to print the schema of every wire model as one
JSON Schema (draft 2020-12) document, e.g. for clients written in other languages.
"""

from __future__ import annotations

from loom_protocol._schema import WIRE_MODELS, json_schemas, main

__all__ = ["WIRE_MODELS", "json_schemas", "main"]

if __name__ == "__main__":
    main()
