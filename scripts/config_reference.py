"""Write ``docs/config.md``, the reference of every config key, from the pydantic models.

    python scripts/config_reference.py            # rewrite docs/config.md
    python scripts/config_reference.py --check    # exit 1 if docs/config.md is out of date

The reference is generated, never edited by hand, so that it cannot drift from the code:
``tests/test_config_reference.py`` fails when the file differs from what this script writes now.
It walks :class:`~autorobust.config.ExperimentConfig` and every section nested in it, in the
order the fields are declared, one table per section: the key's path, its type with the bounds
its ``Field`` sets, its default, and its meaning. The meaning is the field's docstring, the string
literal the project writes right after each field; it is read from the source with ``ast``, which
leaves the models themselves untouched (pydantic's ``use_attribute_docstrings`` would parse the
sources at every import of the config instead). A field without one is listed as undocumented.
Rules that a validator checks across fields are in the meanings and section introductions only.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from autorobust.config import ExperimentConfig

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "config.md"
COMMAND = "python scripts/config_reference.py"
UNDOCUMENTED = "*(undocumented)*"


@dataclass(frozen=True)
class Section:
    """One table: the fields of ``model`` under the key path ``path`` ("" for the top level)."""

    path: str
    model: type[BaseModel]


@cache
def _parsed(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text(encoding="utf-8"))


def _class_field_docs(cls: type) -> dict[str, str]:
    """Docstrings of the fields ``cls`` itself declares: a string right after ``name: type``."""
    try:
        tree = _parsed(inspect.getsourcefile(cls) or "")
    except (OSError, TypeError):
        return {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            docs = {}
            for statement, following in zip(node.body, node.body[1:], strict=False):
                if (
                    isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    docs[statement.target.id] = following.value.value
            return docs
    return {}


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstring of every field of ``model``, from the class that declares it (bases too)."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(_class_field_docs(cls))
    return {name: docs[name] for name in model.model_fields if name in docs}


def one_line(text: str) -> str:
    """A docstring as one line of Markdown: reST roles and ````code```` become `code`."""
    text = " ".join(inspect.cleandoc(text).split())
    text = re.sub(r":(?:mod|func|class|meth|attr|data|obj):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def cell(text: str) -> str:
    """A docstring as one Markdown table cell (a ``|`` would end the cell)."""
    return one_line(text).replace("|", "\\|")


def _anchor(path: str) -> str:
    """GitHub's anchor of the heading ``## `path```: lower case, punctuation dropped."""
    return re.sub(r"[^a-z0-9_-]", "", path.lower())


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def render_type(annotation: Any) -> str:
    """``int``, ``float or null``, `` `a`, `b` or `c` ``, ``list of str``, ``(int, int)``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is typing.Literal:
        names = [f"`{arg}`" for arg in args]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    if origin in (typing.Union, types.UnionType):
        members = [render_type(arg) for arg in args if arg is not type(None)]
        if type(None) in args:
            members.append("null")
        return " or ".join(members)
    if origin is list:
        return f"list of {render_type(args[0])}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple of {render_type(args[0])}"
        return f"({', '.join(render_type(arg) for arg in args)})"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _number(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def render_constraints(field: FieldInfo) -> str:
    """The bounds a ``Field`` sets, e.g. ``>= 1``, ``in (0, 1]``, ``at least 1 item``."""
    low = high = None
    parts = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"[{_number(item.ge)}"
        elif isinstance(item, annotated_types.Gt):
            low = f"({_number(item.gt)}"
        elif isinstance(item, annotated_types.Le):
            high = f"{_number(item.le)}]"
        elif isinstance(item, annotated_types.Lt):
            high = f"{_number(item.lt)})"
        elif isinstance(item, annotated_types.MinLen):
            s = "" if item.min_length == 1 else "s"
            parts.append(f"at least {item.min_length} item{s}")
        elif isinstance(item, annotated_types.MaxLen):
            s = "" if item.max_length == 1 else "s"
            parts.append(f"at most {item.max_length} item{s}")
        else:  # shown as pydantic states it rather than dropped
            parts.append(repr(item))
    if low and high:
        parts.insert(0, f"in {low}, {high}")
    elif low:
        parts.insert(0, (">= " if low[0] == "[" else "> ") + low[1:])
    elif high:
        parts.insert(0, ("<= " if high[-1] == "]" else "< ") + high[:-1])
    return ", ".join(parts)


def render_value(value: Any) -> str:
    """A default as it would be written in YAML: ``null``, ``true``, ``[0.5, 0.75]``, ``{}``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(render_value(item) for item in value)}]"
    if isinstance(value, dict):
        items = ", ".join(f"{key}: {render_value(item)}" for key, item in value.items())
        return f"{{{items}}}"
    if isinstance(value, BaseModel):
        return render_value(value.model_dump(mode="json"))
    return str(value)


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _resolved(resolved: dict[str, Any], path: str) -> Any:
    """The value at ``path`` of ``resolved``, a model validated from nothing (a validator may
    fill in a default from other keys, as ``search.seed`` is from ``seed``)."""
    value: Any = resolved
    for part in path.split("."):
        value = value[part]
    return value


def sections(model: type[BaseModel] = ExperimentConfig, path: str = "") -> list[Section]:
    """``model`` and every section nested in it, depth first, in declaration order."""
    found = [Section(path, model)]
    for name, field in model.model_fields.items():
        nested = _section_model(field.annotation)
        if nested is not None:
            found.extend(sections(nested, f"{path}.{name}" if path else name))
    return found


def _row(
    section: Section, name: str, field: FieldInfo, docs: dict[str, str], resolved: dict[str, Any]
) -> str:
    key = f"{section.path}.{name}" if section.path else name
    nested = _section_model(field.annotation)
    if nested is not None:
        kind = f"section ([`{key}`](#{_anchor(key)}))"
        default = "its defaults"
    else:
        kind = render_type(field.annotation)
        bounds = render_constraints(field)
        kind = f"{kind}, {bounds}" if bounds else kind
        declared = _default(field)
        if declared is PydanticUndefined:
            default = "required"
        elif render_value(declared) != render_value(_resolved(resolved, key)):
            default = f"`{render_value(declared)}`; left out: see meaning"
        else:
            default = f"`{render_value(declared)}`"
    if name in docs:
        meaning = cell(docs[name])
    elif nested is not None and nested.__doc__:  # a section says what it is itself
        meaning = cell(inspect.cleandoc(nested.__doc__).split("\n\n")[0])
    else:
        meaning = UNDOCUMENTED
    return f"| `{key}` | {kind} | {default} | {meaning} |"


def render(model: type[BaseModel] = ExperimentConfig) -> str:
    """The whole of ``docs/config.md``: the reference of ``model`` and its sections."""
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the pydantic models; do not edit. -->",
        "",
        "Every key of a run's config (`config.yaml`, `--set key.path=value`), section by section,",
        "generated from `autorobust.config.ExperimentConfig` and the sections it holds. A YAML",
        "file sets any subset of them; every other key keeps its default, and the resolved config",
        "(every default written out) is saved as the run's `config.yaml`. Unknown keys, wrong",
        "types, values out of bounds, and infinite or NaN numbers are refused with the key's path.",
        f"Regenerate this file with `{COMMAND}` after changing a config model.",
        "",
    ]
    undocumented = 0
    resolved = model().model_dump(mode="json")
    for section in sections(model):
        docs = field_docs(section.model)
        title = f"`{section.path}`" if section.path else "Top level"
        lines += [f"## {title}", ""]
        if section.model.__doc__:  # its own docstring, not one inherited from StrictModel
            lines += [one_line(section.model.__doc__), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in section.model.model_fields.items():
            row = _row(section, name, field, docs, resolved)
            lines.append(row)
            undocumented += row.endswith(f"| {UNDOCUMENTED} |")
        lines.append("")
    lines.append(f"Keys without a docstring: {undocumented}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write (docs/config.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
