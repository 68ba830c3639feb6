"""Scheme files: reading and writing documents of schemes, in any of their forms.

Forms: damo's single-line text form (:mod:`pydamon.damos.scheme_text`), and its JSON/YAML
(``--schemes``) form: a list of schemes in damo's layout (``access_pattern``, ``action``,
``apply_interval_us``, ``quotas``, ``watermarks``, ``filters``; each scheme converts itself with
:meth:`Scheme.from_dict <pydamon.damos.scheme.Scheme.from_dict>` / ``to_dict``), or a document
with a ``schemes`` list, or damo's whole ``kdamonds`` document. This module only finds the
schemes in a document and loads or dumps the document.

Every error is a :class:`SchemeFileError` whose one-line message names the line (or JSON path)
and field that is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydamon.damos.fields import DocPath, SchemeFileError, items, mapping
from pydamon.damos.scheme import Scheme, SchemeError
from pydamon.damos.scheme_text import (
    format_scheme_line,
    format_schemes_text,
    parse_scheme_line,
    parse_schemes_text,
)
from pydamon.extras import install_hint

if TYPE_CHECKING:
    from pydamon.core.attrs import Attrs

__all__ = [
    "SchemeFileError",
    "detect_format",
    "dump_schemes",
    "format_scheme_line",
    "format_schemes_json",
    "format_schemes_text",
    "format_schemes_yaml",
    "load_schemes",
    "parse_scheme_line",
    "parse_schemes",
    "parse_schemes_json",
    "parse_schemes_text",
    "parse_schemes_yaml",
    "scheme_from_kv",
    "scheme_to_kv",
    "schemes_from_doc",
]


def scheme_from_kv(kv: object, path: DocPath | None = None) -> Scheme:
    """A scheme from damo's JSON layout (a dict): :meth:`Scheme.from_dict`."""
    return Scheme.from_dict(kv, path)


def scheme_to_kv(scheme: Scheme) -> dict[str, Any]:
    """damo's JSON layout of ``scheme``: :meth:`Scheme.to_dict`."""
    return scheme.to_dict()


def _schemesitems(doc: object, path: DocPath) -> tuple[list[Any], DocPath]:
    """Find the list of schemes in a document: a list, ``{"schemes": [...]}``, or damo's
    ``{"kdamonds": [{"contexts": [{"schemes": [...]}]}]}`` (all contexts' schemes)."""
    if isinstance(doc, list):
        return doc, path
    if isinstance(doc, Mapping):
        if "schemes" in doc:
            return items(doc["schemes"], path / "schemes"), path / "schemes"
        if "kdamonds" in doc:
            found: list[Any] = []
            for ki, kd in enumerate(items(doc["kdamonds"], path / "kdamonds")):
                kpath = path / "kdamonds" / ki
                for ci, ctx in enumerate(
                    items(mapping(kd, kpath).get("contexts", []), kpath / "contexts")
                ):
                    cpath = kpath / "contexts" / ci
                    found += items(mapping(ctx, cpath).get("schemes", []), cpath / "schemes")
            return found, path
        if "action" in doc or "access_pattern" in doc:
            return [doc], path
    raise path.error("expected a list of schemes, or an object with a 'schemes' list")


def parse_schemes_json(text: str, source: str = "<schemes>") -> list[Scheme]:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        detail = (
            f"line {err.lineno} column {err.colno}: {err.msg}"
            if isinstance(err, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise SchemeFileError(f"{source}: invalid JSON at {detail}") from None
    return schemes_from_doc(doc, source)


def parse_schemes_yaml(text: str, source: str = "<schemes>") -> list[Scheme]:
    try:
        import yaml
    except ImportError:
        raise SchemeFileError(
            f"{source}: reading YAML needs PyYAML; install it ({install_hint('pyyaml', 'yaml')}) "
            "or use JSON"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SchemeFileError(f"{source}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise SchemeFileError(f"{source}: invalid YAML: nested too deeply") from None
    return schemes_from_doc(doc, source)


def schemes_from_doc(doc: object, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from a parsed JSON/YAML document."""
    root = DocPath(source)
    items, path = _schemesitems(doc, root)
    return [Scheme.from_dict(item, path / i) for i, item in enumerate(items)]


def format_schemes_json(schemes: Iterable[Scheme], indent: int | None = 4) -> str:
    return json.dumps([s.to_dict() for s in schemes], indent=indent) + "\n"


def format_schemes_yaml(schemes: Iterable[Scheme]) -> str:
    try:
        import yaml
    except ImportError:
        raise SchemeFileError(
            f"writing YAML needs PyYAML; install it ({install_hint('pyyaml', 'yaml')}) or use JSON"
        ) from None
    return str(yaml.safe_dump([s.to_dict() for s in schemes], sort_keys=False))


def detect_format(text: str, filename: str | None = None) -> str:
    """``json``, ``yaml`` or ``text``: by file extension, else by content."""
    if filename:
        ext = os.path.splitext(filename)[1].lower()
        if ext == ".json":
            return "json"
        if ext in (".yaml", ".yml"):
            return "yaml"
        if ext in (".txt", ".damos", ".schemes"):
            return "text"
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        return "json"
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # YAML documents have "key:" or "- " items; scheme lines never contain ':'
        if line.startswith("- ") or line == "-" or line.startswith("---") or ":" in line:
            return "yaml"
        return "text"
    return "text"


def parse_schemes(text: str, fmt: str | None = None, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from text in any form (``fmt``: ``text``, ``json``, ``yaml`` or None to detect)."""
    fmt = fmt or detect_format(text)
    if fmt == "json":
        return parse_schemes_json(text, source)
    if fmt == "yaml":
        return parse_schemes_yaml(text, source)
    if fmt == "text":
        return parse_schemes_text(text, source)
    raise SchemeFileError(f"{source}: unknown scheme format {fmt!r}; use text, json or yaml")


def load_schemes(path: str, fmt: str | None = None) -> list[Scheme]:
    """Schemes from a file (format by extension or content)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise SchemeFileError(f"{path}: cannot read scheme file: {reason}") from None
    return parse_schemes(text, fmt or detect_format(text, path), path)


def dump_schemes(schemes: Sequence[Scheme], fmt: str = "json", attrs: Attrs | None = None) -> str:
    """Schemes as ``text``, ``json`` or ``yaml``."""
    if fmt == "json":
        return format_schemes_json(schemes)
    if fmt == "yaml":
        return format_schemes_yaml(schemes)
    if fmt == "text":
        try:
            return format_schemes_text(schemes, attrs)
        except SchemeError as err:
            raise SchemeFileError(str(err)) from None
    raise SchemeFileError(f"unknown scheme format {fmt!r}; use text, json or yaml")
