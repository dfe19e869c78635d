"""YAML -> Spec, with errors that name the file, the line, the key and the closest valid names."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from imgcls.errors import SpecError
from imgcls.registry import did_you_mean
from imgcls.spec.schema import Spec

KeyPath = tuple[str | int, ...]


@dataclass
class SpecSource:
    """Where each key of the raw mapping came from: a line of the file (or of another file named in `files`,
    e.g. a search space), or a --set override."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overrides: dict[KeyPath, str] = field(default_factory=dict)
    files: dict[KeyPath, str] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line that best locates `path` (overrides sort after the file)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.overrides:
                return 1 << 30
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 0

    def where(self, path: KeyPath) -> str:
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.overrides:
                return f"{self.overrides[prefix]} (command line)"
            if prefix in self.lines:
                return f"{self.files.get(prefix, self.file)}:{self.lines[prefix]}"
        return self.file


def record_lines(
    node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str, inside: frozenset[int] = frozenset()
) -> None:
    """Fill `lines` with the 1-based line of every key, rejecting duplicate keys (YAML keeps the last) and aliases
    that refer to an anchor they are inside (`a: &x [*x]` would be an endless structure)."""
    if id(node) in inside:
        raise SpecError(
            f"{file}:{node.start_mark.line + 1}: {'.'.join(map(str, path))} refers to itself through a YAML alias",
            hint="an alias (*name) may repeat an anchor (&name) defined elsewhere, not one it is inside",
        )
    inside = inside | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(
                    f"{file}:{line}: key '{'.'.join(map(str, [*path, key]))}' appears twice in the same mapping",
                    hint="delete one of the two; YAML would silently keep only the last",
                )
            seen.add(key)
            lines[path + (key,)] = line
            record_lines(value_node, path + (key,), lines, file, inside)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            record_lines(item, path + (index,), lines, file, inside)


def _parse_yaml(text: str, file: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{file}{line}: not valid YAML: {problem}", hint="check indentation and quoting") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{file}: the spec must be a mapping of sections (data:, model:, train:, ...)")
    lines: dict[KeyPath, int] = {}
    if node is not None:
        record_lines(node, (), lines, file)
    return raw, lines


def dotted_keys(dotted: str) -> KeyPath:
    """`train.stages.0.lr_max` -> ('train', 'stages', 0, 'lr_max')."""
    return tuple(int(k) if k.isdigit() else k for k in dotted.strip().split("."))


def set_path(raw: dict[str, Any], keys: KeyPath, value: Any, what: str) -> None:
    """Set raw[k0][k1]... = value, creating missing mappings; `what` starts each error message."""
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list) and isinstance(key, int):
            if key >= len(node):
                raise SpecError(f"{what}: {'.'.join(map(str, keys[:depth]))} has no item {key}")
            node = node[key]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            raise SpecError(f"{what}: {'.'.join(map(str, keys[:depth]))} is not a mapping")
    last = keys[-1]
    settable = isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node))
    if not settable:
        raise SpecError(f"{what}: cannot set {'.'.join(map(str, keys))} here")
    node[last] = value


def apply_override(raw: dict[str, Any], assignment: str) -> KeyPath:
    """Apply `a.b.0.c=value` (value parsed as YAML, so 32 is an int and [1, 2] a list) to `raw`."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment}: expected key.path=value, e.g. --set data.bs=32")
    dotted, text = assignment.split("=", 1)
    keys = dotted_keys(dotted)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    set_path(raw, keys, value, f"--set {assignment}")
    return keys


# --- turning pydantic's errors into ones a person can act on -----------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation can hold (Annotated, Optional and unions flattened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _models_at(loc: KeyPath) -> list[type[BaseModel]]:
    """The spec models that the key path `loc` (as pydantic reports it, tags included) points into."""
    current: list[Any] = [Spec]
    for element in loc:
        following: list[Any] = []
        for typ in current:
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                if isinstance(element, str) and element in typ.model_fields:
                    following.extend(_unwrap(typ.model_fields[element].annotation))
            elif typing.get_origin(typ) is list and isinstance(element, int):
                following.extend(_unwrap(typing.get_args(typ)[0]))
            elif typing.get_origin(typ) is dict and isinstance(element, str):
                following.extend(_unwrap(typing.get_args(typ)[1]))
        if not following:
            # A discriminator tag (e.g. 'regex'): keep the union member whose tag it is.
            tagged = [t for t in current if _has_tag(t, element)]
            following = tagged or current
        current = following
    return [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]


def _has_tag(typ: Any, tag: object) -> bool:
    if not (isinstance(typ, type) and issubclass(typ, BaseModel)):
        return False
    for name in ("kind", "name", "schedule"):
        info = typ.model_fields.get(name)
        if info is not None and tag in typing.get_args(info.annotation):
            return True
    return False


def _yaml_path(loc: KeyPath, raw: Any) -> KeyPath:
    """Drop the parts of pydantic's location that are not keys of the YAML (union tags, validator names)."""
    path: list[str | int] = []
    node = raw
    for element in loc:
        in_mapping = isinstance(node, dict) and element in node
        in_list = isinstance(node, list) and isinstance(element, int) and element < len(node)
        if in_mapping or in_list:
            path.append(element)
            node = node[element]
    return tuple(path)


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> tuple[KeyPath, str]:
    loc: KeyPath = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        valid = sorted({f for model in _models_at(loc[:-1]) for f in model.model_fields})
        return _yaml_path(loc, raw), (
            f"unknown key '{key}'{did_you_mean(key, valid)}; valid keys here: {', '.join(valid)}"
        )
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        tag = str(ctx.get("tag", ""))
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        path = _yaml_path(loc, raw) + (discriminator,)
        return path, f"unknown value '{tag}'{did_you_mean(tag, tags)}; valid values: {', '.join(tags)}"
    if kind == "union_tag_not_found":
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        return _yaml_path(loc, raw), f"missing '{discriminator}' (it says which kind of entry this is)"
    if kind == "missing":
        return _yaml_path(loc, raw), f"required key '{loc[-1]}' is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "invalid_key" and isinstance(error.get("input"), bool):
        message += "; YAML reads the keys on/off/yes/no/true/false as booleans: quote the key or rename it"
    if "input" in error and kind not in ("value_error", "assertion_error"):
        message += f" (got {error['input']!r})"
    return _yaml_path(loc, raw), message


def _spec_error(
    err: ValidationError, raw: dict[str, Any], source: SpecSource, title: str | None = None, hint: str | None = None
) -> SpecError:
    found: list[tuple[int, str]] = []
    seen: set[KeyPath] = set()
    for error in err.errors():
        path, message = _describe(dict(error), raw)
        # Union members each report a failure at the same place; the first one is enough.
        if path in seen and error["type"] != "extra_forbidden":
            continue
        seen.add(path)
        dotted = ".".join(map(str, path)) or "(top level)"
        found.append((source.line_of(path), f"  {source.where(path)}: {dotted}: {message}"))
    lines = [text for _, text in sorted(found, key=lambda pair: pair[0])]
    return SpecError(
        f"{title or f'invalid spec {source.file}'}:\n" + "\n".join(lines),
        hint=hint or "fix the keys above; `imgcls spec FILE` prints the resolved spec with every default",
    )


def read_spec(path: str | Path) -> tuple[dict[str, Any], SpecSource]:
    """The raw mapping of a YAML file and the line of each of its keys (not yet validated)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {file}") from None
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{file} is not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x})",
            hint="save the spec as UTF-8; a spec is a YAML text file",
        ) from None
    except OSError as err:
        raise SpecError(f"cannot read spec file {file}: {err.strerror}") from None
    raw, lines = _parse_yaml(text, file)
    return raw, SpecSource(file=file, lines=lines)


def apply_overrides(raw: dict[str, Any], source: SpecSource, overrides: list[str] | None) -> None:
    """Apply each `a.b=value` to `raw`, remembering it as the source of that key."""
    for assignment in overrides or []:
        source.overrides[apply_override(raw, assignment)] = f"--set {assignment}"


def validate_spec(raw: dict[str, Any], source: SpecSource, title: str | None = None, hint: str | None = None) -> Spec:
    """Validate a raw mapping; errors name the file and line (or override) each bad key came from, under
    `title` (default: 'invalid spec FILE')."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise _spec_error(err, raw, source, title, hint) from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override (`a.b=value`) and validate a spec file."""
    raw, source = read_spec(path)
    apply_overrides(raw, source, overrides)
    raw.setdefault("name", Path(path).stem)
    return validate_spec(raw, source)


def spec_from_dict(raw: dict[str, Any], origin: str = "<spec>") -> Spec:
    """Validate an already-parsed spec (e.g. the one stored in a checkpoint)."""
    return validate_spec(raw, SpecSource(file=origin))


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML, every default written out; loading it gives the same Spec."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
