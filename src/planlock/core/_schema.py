"""Small JSON Schema reasoning for the validator: where a path leads, and which types it may hold.

The answers are conservative: ``None`` from ``at_path`` means the path *cannot* exist;
``{}`` means nothing is known (anything may be there). Types are only compared when known.
"""

from __future__ import annotations

from typing import Any

__all__ = ["accepts_types", "at_path", "deref", "json_type", "types_of"]

_SCALARS = {"string", "number", "integer", "boolean", "null"}
Schema = dict[str, Any]


def deref(schema: Any, root: Schema) -> Schema:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return {}
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema = target if isinstance(target, dict) else {}
        seen += 1
    if schema is True or schema is None:
        return {}
    if schema is False:
        return {"not": {}}
    return schema if isinstance(schema, dict) else {}


def _branches(schema: Schema) -> list[Any] | None:
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return list(schema[key])
    return None


def at_path(schema: Any, path: tuple[str, ...], root: Schema | None = None) -> Schema | None:
    """The schema found by following ``path``; None if the path cannot exist on the schema."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    cur = deref(schema, root)
    for i, seg in enumerate(path):
        branches = _branches(cur)
        if branches is not None:
            found = [at_path(b, path[i:], root) for b in branches]
            ok = [f for f in found if f is not None]
            if not ok:
                return None
            return ok[0] if len(ok) == 1 else {"anyOf": ok}
        nxt = _step(cur, seg, root)
        if nxt is None:
            return None
        cur = nxt
    return cur


def _step(schema: Schema, seg: str, root: Schema) -> Schema | None:
    if schema.get("not") == {}:
        return None
    types = _declared_types(schema)
    results: list[Schema] = []
    if (types is None and "properties" in schema) or (types and "object" in types):
        props = schema.get("properties", {})
        if seg in props:
            results.append(deref(props[seg], root))
        else:
            # Closed world: an object schema that lists its properties and says nothing about
            # others is what Pydantic models produce, and they never emit undeclared keys.
            default_extra: Any = "properties" not in schema
            extra = schema.get("additionalProperties", default_extra)
            if extra is not False and not (isinstance(extra, dict) and extra.get("not") == {}):
                results.append(deref(extra, root))
    array_like = (types is None and ("items" in schema or "prefixItems" in schema)) or (
        types and "array" in types
    )
    if array_like and seg.isdigit():
        idx = int(seg)
        prefix = schema.get("prefixItems", [])
        if idx < len(prefix):
            results.append(deref(prefix[idx], root))
        elif schema.get("items", True) is not False and idx < schema.get("maxItems", idx + 1):
            results.append(deref(schema.get("items", {}), root))
    if types is None and not results and not _shape_keys(schema):
        return {}  # nothing known: anything may be there
    if not results:
        return None
    return results[0]


def _shape_keys(schema: Schema) -> bool:
    return any(k in schema for k in ("properties", "items", "prefixItems", "const", "enum"))


def _declared_types(schema: Schema) -> set[str] | None:
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    if "const" in schema:
        return {json_type(schema["const"])}
    if "enum" in schema and isinstance(schema["enum"], list):
        return {json_type(v) for v in schema["enum"]}
    return None


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def types_of(schema: Any, root: Schema | None = None) -> set[str] | None:
    """The JSON types a value of this schema may have; None when unknown (anything)."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    s = deref(schema, root)
    branches = _branches(s)
    if branches is not None and "allOf" not in s:
        out: set[str] = set()
        for b in branches:
            t = types_of(b, root)
            if t is None:
                return None
            out |= t
        return out
    declared = _declared_types(s)
    if declared is not None:
        return declared
    if "properties" in s:
        return {"object"}
    if "items" in s or "prefixItems" in s:
        return {"array"}
    return None


def accepts_types(param_schema: Any, value_types: set[str] | None, root: Schema) -> bool:
    """Whether a parameter with this schema may accept a value of one of ``value_types``."""
    if value_types is None:
        return True
    accepted = types_of(param_schema, root)
    if accepted is None:
        return True
    if "number" in accepted:
        accepted = accepted | {"integer"}
    if "integer" in accepted and "number" in value_types:
        return True  # a number may be integral; checked on the concrete value
    return bool(accepted & value_types)
