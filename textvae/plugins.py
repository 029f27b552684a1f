"""User plugins: Python files (`--plugin FILE`) or installed packages (the `textvae.plugins` entry-point group)
whose import registers objectives, update rules, architectures, priors or datasets. A run directory records the
plugin files it was trained with (`plugins.json`: path and sha256), so loading it without them is a one-line
error naming them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from textvae.atomic import write_atomic
from textvae.errors import TextVAEError

if TYPE_CHECKING:
    from textvae.config.recipe import Recipe

ENTRY_POINT_GROUP = "textvae.plugins"
PLUGINS_FILE = "plugins.json"
ENV_VAR = "TEXTVAE_PLUGINS"  # plugin files a parent process loaded, os.pathsep-separated
log = logging.getLogger(__name__)

_loaded_files: dict[str, str] = {}  # sha256 -> resolved path of each plugin file imported in this process
_modules: dict[str, str] = {}  # module name of each imported plugin file -> its sha256
_installed_loaded = False


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plugin_file(path: str | Path) -> dict[str, str]:
    """Import one plugin file (once per content); returns its record `{path, sha256}`."""
    path = Path(path)
    if not path.is_file():
        raise TextVAEError(f"--plugin {path}: file not found")
    if path.suffix != ".py":
        raise TextVAEError(f"--plugin {path}: a plugin is a Python file (.py)")
    try:
        sha = file_sha256(path)
    except OSError as err:
        raise TextVAEError(f"--plugin {path}: cannot read ({err.strerror or err})") from err
    record = {"path": str(path.resolve()), "sha256": sha}
    if sha in _loaded_files:
        return record
    name = f"textvae_plugin_{path.stem}_{sha[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        line = next(
            (f.lineno for f in reversed(traceback.extract_tb(err.__traceback__)) if f.filename == str(path)), None
        )
        where = f" line {line}" if line else ""
        raise TextVAEError(f"--plugin {path}:{where}: {type(err).__name__}: {err}") from err
    _loaded_files[sha] = record["path"]
    _modules[name] = sha
    return record


def load_plugin_files(paths: list[str] | list[Path] | None) -> list[dict[str, str]]:
    """Import the files of TEXTVAE_PLUGINS (set by a parent textvae process) and every `--plugin` file, in order;
    then TEXTVAE_PLUGINS names them all, so subprocesses (`reproduce`'s jobs, torchrun workers) import them too."""
    load_installed_plugins()
    inherited = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    records = [load_plugin_file(p) for p in [*inherited, *(paths or [])]]
    if records:
        os.environ[ENV_VAR] = os.pathsep.join(dict.fromkeys(r["path"] for r in records))
    return records


def load_installed_plugins() -> None:
    """Import the modules of the `textvae.plugins` entry points (once per process)."""
    global _installed_loaded
    if _installed_loaded:
        return
    _installed_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as err:
            raise TextVAEError(f"installed plugin {point.name} ({point.value}): {type(err).__name__}: {err}") from err


def recipe_plugin_records(recipe: Recipe) -> list[dict[str, str]]:
    """The plugin files that define the architecture, prior, posterior, objectives or update rule `recipe` names
    (what its run directory records; other plugins loaded in the same process are not needed to load the run)."""
    from textvae.registries import ARCHITECTURES, OBJECTIVES, POSTERIORS, PRIORS, UPDATES

    model = recipe.model
    used = [(ARCHITECTURES, model.type), (PRIORS, model.prior.type), (POSTERIORS, model.posterior)]
    used += [(OBJECTIVES, recipe.objective.type), (UPDATES, recipe.update.type)]
    if recipe.train.pretrain is not None:
        used.append((OBJECTIVES, recipe.train.pretrain.objective.type))
    modules = {module for registry, name in used for module in registry.modules(name)}
    shas = dict.fromkeys(_modules[m] for m in sorted(modules) if m in _modules and _modules[m] in _loaded_files)
    return [{"path": _loaded_files[sha], "sha256": sha} for sha in shas]


def write_plugin_records(run_dir: Path, recipe: Recipe) -> None:
    """Record the plugin files `recipe` needs in RUN_DIR/plugins.json (nothing when there are none)."""
    records = recipe_plugin_records(recipe)
    if records:
        write_atomic(run_dir / PLUGINS_FILE, (json.dumps(records, indent=2) + "\n").encode("utf-8"))


def check_run_plugins(run_dir: Path) -> None:
    """A one-line error naming the plugin files `run_dir` was trained with that this process has not loaded."""
    file = run_dir / PLUGINS_FILE
    if not file.is_file():
        return
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
        needed = [(str(r["path"]), str(r["sha256"])) for r in records]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise TextVAEError(f"{file}: unreadable plugin record ({err})") from err
    loaded_paths = set(_loaded_files.values())
    for path, sha in needed:
        if sha in _loaded_files:
            continue
        if path in loaded_paths:
            log.warning("plugin %s has changed since %s was trained (sha256 %s… then)", path, run_dir, sha[:12])
            continue
        raise TextVAEError(f"{run_dir}: trained with plugin {path} (sha256 {sha[:12]}…): pass --plugin {path}")
