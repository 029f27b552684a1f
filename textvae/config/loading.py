"""Reading recipes: YAML with `base:` inheritance, `--set` overrides, paths relative to the recipe file, and
validation errors as one line naming the file and the key."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from textvae.atomic import write_atomic
from textvae.config.recipe import DEFAULT_TYPES, Recipe
from textvae.errors import TextVAEError
from textvae.registries import ARCHITECTURES, OBJECTIVES, PRIORS, UPDATES
from textvae.registry import Registry


@dataclass(frozen=True)
class TypedSection:
    """A recipe section whose class a registry picks by its `type:`, wherever it sits in the recipe tree."""

    path: tuple[str, ...]
    registry: Registry
    default: str  # the type of a section without `type:`
    by_name: bool = False  # the section may be written as its type's name alone (`prior: mog`)

    def get(self, data: dict[str, Any]) -> Any:
        """The section's value in `data`, or None where it is absent."""
        value: Any = data
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def put(self, data: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
        """`data` with the section replaced by `value` (the mappings on the way copied, `data` left as it is)."""
        return _with_value(data, self.path, value)

    def type_of(self, value: dict[str, Any]) -> Any:
        return value.get("type", self.default)


def _with_value(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    head, *rest = path
    return {**data, head: _with_value(data[head], tuple(rest), value) if rest else value}


# outer sections first: a nested section is layered once its parent is
TYPED_SECTIONS = (
    TypedSection(("model",), ARCHITECTURES, DEFAULT_TYPES["model"]),
    TypedSection(("model", "prior"), PRIORS, DEFAULT_TYPES["prior"], by_name=True),
    TypedSection(("objective",), OBJECTIVES, DEFAULT_TYPES["objective"]),
    TypedSection(("update",), UPDATES, DEFAULT_TYPES["update"]),
    TypedSection(("train", "pretrain", "objective"), OBJECTIVES, DEFAULT_TYPES["objective"]),
)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def layer_recipe(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A recipe with `over` (a child recipe, a `--set`) merged onto `base`. Where `over` changes the `type:` of a
    typed section (model, model.prior, objective, update, train.pretrain.objective), the parent's keys that the
    new type's section does not have are dropped (a transformer child of an LSTM recipe keeps `latent_dim`, not
    `hidden_dim`)."""
    for section in TYPED_SECTIONS:
        old, new = section.get(base), section.get(over)
        if section.by_name and isinstance(old, str) and isinstance(new, dict):  # `prior: mog` under settings
            old = {"type": old}
            base = section.put(base, old)
        if not (isinstance(old, dict) and isinstance(new, dict) and isinstance(new.get("type"), str)):
            continue
        if new["type"] != section.type_of(old) and new["type"] in section.registry:
            keys = section.registry.config(new["type"]).model_fields
            base = section.put(base, {key: value for key, value in old.items() if key in keys})
    return _deep_merge(base, over)


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file's top-level mapping; any unreadable content is a one-line error naming the file."""
    if not path.is_file():
        raise TextVAEError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise TextVAEError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TextVAEError(f"{path}:{where} invalid YAML: {problem}") from err
    except RecursionError as err:
        raise TextVAEError(f"{path}: invalid YAML: nested too deeply") from err
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise TextVAEError(f"{path}: invalid YAML value ({str(err).splitlines()[0]})") from err
    except OSError as err:
        raise TextVAEError(f"{path}: cannot read ({err.strerror or err})") from err
    if data is None:
        raise TextVAEError(f"{path}: recipe file is empty")
    if not isinstance(data, dict):
        raise TextVAEError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    if _too_many_values(data):
        raise TextVAEError(f"{path}: recipe holds over {MAX_RECIPE_VALUES:,} values once YAML aliases are expanded")
    return data


MAX_RECIPE_VALUES = 100_000  # a real recipe has hundreds; YAML aliases can nest a few lines into 9^n values


def _too_many_values(data: Any) -> bool:
    """Whether `data`, aliases expanded, holds more than MAX_RECIPE_VALUES values (stops counting there)."""
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_RECIPE_VALUES:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def load_recipe_dict(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe file, resolving `base:` (a path relative to the file) by deep merge."""
    path = Path(path)
    if path.resolve() in _seen:
        raise TextVAEError(f"{path}: `base:` chain loops back to itself")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip() or any(c in base for c in "\r\n\0"):
        raise TextVAEError(f"{path}: key 'base' must be the path of another recipe file, got {base!r}")
    if not (path.parent / base).is_file():
        raise TextVAEError(f"{path}: key 'base': {path.parent / base}: recipe file not found")
    parent = load_recipe_dict(path.parent / base, (*_seen, path.resolve()))
    return layer_recipe(parent, data)


def load_saved_recipe_dict(path: Path) -> dict[str, Any]:
    """A run directory's resolved recipe. One saved before each architecture (and each prior) had its own section
    holds every architecture's model keys (every prior's keys); those of the others are dropped (never used)."""
    data = read_yaml(path)
    for section in TYPED_SECTIONS:
        value = section.get(data)
        if section.registry in (ARCHITECTURES, PRIORS) and isinstance(value, dict):
            data = section.put(data, section.registry.own_keys(value, section.default))
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise TextVAEError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise TextVAEError(f"--set {item!r}: empty key")
    return parts, _override_value(item, raw)


def _override_value(item: str, raw: str) -> Any:
    """The value of a `--set` item, parsed as YAML ("" when empty)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TextVAEError(f"--set {item!r}: invalid YAML value: {problem}") from err
    except (ValueError, RecursionError) as err:
        raise TextVAEError(f"--set {item!r}: invalid YAML value ({str(err).splitlines()[0]})") from err


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML scalars)."""
    data = dict(data)
    for item in overrides:
        parts, value = _parse_override(item)
        data = layer_recipe(data, _nest(parts, value))
    return data


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _short_repr() -> reprlib.Repr:
    """A repr of bounded length and cost, for quoting a bad value in an error."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 2, 60, 60
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    return short


_SHORT = _short_repr()


def _key_part(part: Any) -> str:
    """A key as the user wrote it, escaped where it holds line breaks or other unprintable characters."""
    text = str(part)
    return text if text.isprintable() else repr(text)[1:-1]


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line: the file, the first bad key and what is wrong (a bounded excerpt of the value)."""
    first = err.errors()[0]
    loc = list(first["loc"])
    key = ".".join(_key_part(p) for p in loc) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = " ".join(first["msg"].split())
        if "input" in first and not isinstance(first["input"], dict):
            message += f" (got {_SHORT.repr(first['input'])})"  # bounded: YAML aliases can nest a value 9^n times
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' * (more > 1)})" if more else ""
    return f"{source}: key '{key}': {message}{suffix}"


def build_recipe(data: dict[str, Any], source: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise TextVAEError(format_validation_error(source, err)) from err


# the recipe keys that name files or folders
PATH_KEYS = (
    ("data", "train"),
    ("data", "valid"),
    ("data", "test"),
    ("data", "cache_dir"),
    ("data", "tokenizer", "vocab_file"),
    ("data", "tokenizer", "path"),
    ("model", "huggingface", "encoder"),
    ("model", "huggingface", "decoder"),
)


def resolve_recipe_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative paths resolve against the recipe file's folder where the file or folder exists there; others are
    kept as written (relative to the working directory, as the shipped recipes' `data/...` paths are)."""
    for keys in PATH_KEYS:
        parent: Any = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).exists():
            parent[keys[-1]] = str((folder / value).resolve())
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe YAML (paths relative to its folder where they exist there), apply `--set` overrides (paths
    relative to the working directory), validate. Errors name the file and the key."""
    path = Path(path)
    data = apply_overrides(resolve_recipe_paths(load_recipe_dict(path), path.parent), overrides or [])
    return build_recipe(data, str(path))


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe as YAML, atomically (a failed write is a one-line error naming the file)."""
    text = yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False)
    write_atomic(path, text.encode("utf-8"))
