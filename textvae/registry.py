"""Name -> implementation registries filled by a decorator (recipes name things by `type:`).

A registry may also hold each entry's recipe section (a pydantic class): `section_field()` is then the recipe
field type that validates a `{type: NAME, ...}` mapping with the class registered under NAME, so methods added
later (by a plugin) are recipe keys as soon as they are registered. A registry whose sections are told apart by
another key (the modalities' `data:` sections, by `format:`) chooses the entry whose section's Literal field of
that key admits the value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, SerializeAsAny, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from textvae.errors import TextVAEError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named implementations; `@registry.register("name", config=Section)` adds one.

    `builtins` names the module whose import registers the package's own entries; it is imported on the first
    lookup (so the registry itself imports nothing), followed by the installed plugins (`textvae.plugins`).
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._loaded = False
        self._items: dict[str, T] = {}
        self._configs: dict[str, type[BaseModel]] = {}
        self._adapters: dict[str, TypeAdapter] = {}  # section_field validators by default type (`build_section`)

    def register(self, name: str, config: type[BaseModel] | None = None) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = item
            if config is not None:
                self._configs[name] = config
            return item

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            if self._builtins is not None:
                importlib.import_module(self._builtins)
            from textvae.plugins import load_installed_plugins

            load_installed_plugins()

    def _unknown(self, name: str) -> str:
        return f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._items))})"

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise TextVAEError(self._unknown(name))
        return self._items[name]

    def config(self, name: str) -> type[BaseModel]:
        """The recipe section class registered with `name`."""
        self._load()
        if name not in self._configs:
            raise TextVAEError(self._unknown(name))
        return self._configs[name]

    def modules(self, name: str) -> set[str]:
        """The modules that define `name`'s implementation and section (which plugin a recipe needs)."""
        self._load()
        defined = [self._items.get(name), self._configs.get(name)]
        return {item.__module__ for item in defined if getattr(item, "__module__", None)}

    def section_keys(self) -> set[str]:
        """The keys of every registered section (a key no entry has is not one of this registry's)."""
        self._load()
        return {key for config in self._configs.values() for key in config.model_fields}

    def without_others_keys(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        """`values` without the keys that other entries' sections have and `name`'s has not (what a file saved
        when one section held every entry's keys carries besides its own); keys no section has are kept."""
        others = self.section_keys() - set(self.config(name).model_fields)
        return {key: value for key, value in values.items() if key not in others}

    def own_keys(self, section: dict[str, Any], default: str) -> dict[str, Any]:
        """A saved section (its entry named by `type:`, else `default`) without the keys only other entries' sections
        have; unchanged where the name is not registered (validation then names it)."""
        name = section.get("type", default)
        return self.without_others_keys(name, section) if isinstance(name, str) and name in self else section

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def section_field(self, default: str, key: str = "type") -> Any:
        """The recipe field type of this registry's sections; a mapping without `key` (`type:`) is a `default`.
        With another key the entry is the one whose section's `key` field admits the value (`entry_by`)."""
        return Annotated[SerializeAsAny[BaseModel], WrapValidator(self._validate_section(default, key))]

    def build_section(self, fields: dict[str, Any], default: str) -> BaseModel:
        """The section `fields` describe, of the class registered under their `type` (`default` without one); a
        pydantic ValidationError for keys that class has not."""
        if default not in self._adapters:
            self._adapters[default] = TypeAdapter(self.section_field(default))
        return self._adapters[default].validate_python(fields)

    def _values_of(self, key: str) -> dict[Any, str]:
        """Each value a section's Literal field `key` admits -> the entry it names."""
        self._load()
        fields = {name: config.model_fields.get(key) for name, config in self._configs.items()}
        return {
            value: name
            for name, field in fields.items()
            if field is not None and get_origin(field.annotation) is Literal
            for value in get_args(field.annotation)
        }

    def entry_by(self, key: str, value: Any) -> str | None:
        """The entry whose section's Literal field `key` admits `value` (None if none does)."""
        return next((name for known, name in self._values_of(key).items() if known == value), None)

    def _validate_section(self, default: str, key: str = "type") -> Callable[..., BaseModel]:
        def validate(value: Any, handler: Any, info: Any) -> BaseModel:
            self._load()
            if isinstance(value, BaseModel) and type(value) in self._configs.values():
                return value
            if isinstance(value, BaseModel):
                value = value.model_dump(by_alias=True)
            if not isinstance(value, dict):
                raise PydanticCustomError("section_type", f"expected a section (a mapping with `{key}:`)")
            if key != "type":
                return self._configs[self._chosen_by(key, value, default)].model_validate(value)
            name = value.get("type", default)
            if not isinstance(name, str):
                raise PydanticCustomError("section_type", f"`type:` must be a {self.kind} name")
            if name not in self._configs:
                hint = "; a method of your own is registered by --plugin FILE"
                raise PydanticCustomError("section_type", self._unknown(name).replace("{", "{{") + hint)
            return self._configs[name].model_validate({**value, "type": name})

        return validate

    def _chosen_by(self, key: str, value: dict[str, Any], default: str) -> str:
        """The entry `value[key]` names (`default` without the key); an error at `key` for a value none admits."""
        if key not in value:
            return default
        name = self.entry_by(key, value[key])
        if name is None:
            known = ", ".join(sorted(map(str, self._values_of(key))))
            error = PydanticCustomError(
                "section_type",
                "no {kind} reads this {key} (known: {known}); a {kind} of your own is registered by --plugin FILE",
                {"key": key, "known": known, "kind": self.kind},
            )
            details = InitErrorDetails(type=error, loc=(key,), input=value[key])
            raise ValidationError.from_exception_data(self.kind, [details])
        return name
