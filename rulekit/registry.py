"""The plugin registry: one pluggy manager for rulekit's own plugins and installed ones.

Built-in plugins are modules listed in ``BUILTIN_PLUGINS``; third-party plugins are modules named
by entry points in the group ``rulekit``. Both are registered through the same manager and their
hooks are called one plugin at a time, so a plugin that fails to import, raises in its hook or
returns bad objects is recorded as a failed row and the rest still load. Two objects of one kind
under one name are a clash: both rows are marked, and asking for that name stops with an error
that names both plugins, while every other name keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from rulekit import __version__, hookspecs
from rulekit.errors import RulekitError, UnknownNameError

BUILTIN_PLUGINS = (
    "rulekit.tasks.bars",
    "rulekit.tasks.shadow",
    "rulekit.tasks.mirror",
    "rulekit.tasks.perspective",
    "rulekit.models.ddpm",
    "rulekit.models.flow",
    "rulekit.guidance.none",
    "rulekit.guidance.classifier",
    "rulekit.guidance.filters",
    "rulekit.guidance.rule_gradient",
    "rulekit.metrics.rule",
    "rulekit.metrics.coverage",
    "rulekit.metrics.memorisation",
    "rulekit.probes.inputs",
)
ENTRY_POINT_GROUP = "rulekit"
DISABLE_ENV_VAR = "RULEKIT_DISABLE_PLUGINS"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Kind:
    """One kind of plugin object: the hook that returns it and the base class its objects share.

    ``base`` is ``"module:Class"``, imported only when an object is checked, so listing plugins
    never imports torch or diffusers for kinds that do not need them.
    """

    name: str
    plural: str
    hook: str
    base: str

    def check(self, obj: Any) -> str | None:
        """Why ``obj`` cannot be an object of this kind, or None if it can."""
        module_name, class_name = self.base.split(":")
        if not isinstance(obj, getattr(importlib.import_module(module_name), class_name)):
            return f"{type(obj).__name__} is not a {module_name}.{class_name}"
        return None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("task", "tasks", "rulekit_tasks", "rulekit.tasks:Task"),
        Kind("model", "models", "rulekit_models", "rulekit.models:ModelFamily"),
        Kind("guidance", "guidance strategies", "rulekit_guidance", "rulekit.guidance:Guidance"),
        Kind("metric", "metrics", "rulekit_metrics", "rulekit.metrics:Metric"),
        Kind("probe-input", "probe inputs", "rulekit_probe_inputs", "rulekit.probes:ProbeInput"),
    )
}
FAILED_PLUGIN_KIND = "plugin"


@dataclass
class Entry:
    """One row of ``rulekit list-plugins``: a registered object, or a plugin that failed."""

    kind: str
    name: str
    plugin: str
    distribution: str
    version: str
    description: str = ""
    status: str = "ok"
    error: str = ""
    obj: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Source:
    distribution: str
    version: str


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_kind(kind: str) -> Kind:
    """Return the ``Kind`` called ``kind``, or stop with the list of known kinds."""
    if kind not in KINDS:
        raise UnknownNameError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind]


class Registry:
    """Every plugin object rulekit can use, by kind and name, with the plugins that failed."""

    def __init__(
        self,
        builtins: tuple[str, ...] = BUILTIN_PLUGINS,
        use_entry_points: bool = True,
        extra_plugins: dict[str, object] | None = None,
    ) -> None:
        self._manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._manager.add_hookspecs(hookspecs)
        self._sources: dict[str, _Source] = {}
        self.entries: list[Entry] = []
        disabled = {
            name.strip() for name in os.environ.get(DISABLE_ENV_VAR, "").split(",") if name.strip()
        }
        own = _Source("rulekit", __version__)
        for module_name in builtins:
            if module_name not in disabled:
                self._register(module_name, own, lambda name=module_name: importlib.import_module(name))
        if use_entry_points:
            for entry_point, source in _entry_points():
                if entry_point.name not in disabled:
                    self._register(entry_point.name, source, entry_point.load)
        for plugin_name, plugin in (extra_plugins or {}).items():
            self._register(plugin_name, _Source("(in process)", ""), lambda plugin=plugin: plugin)
        self._collect()

    def _fail(self, plugin: str, source: _Source, error: str, kind: str = FAILED_PLUGIN_KIND) -> None:
        self.entries.append(
            Entry(kind, plugin, plugin, source.distribution, source.version, status="failed", error=error)
        )

    def _register(self, plugin_name: str, source: _Source, load: Callable[[], object]) -> None:
        if plugin_name in self._sources:
            self._fail(plugin_name, source, f"a plugin named {plugin_name!r} is already registered")
            return
        try:
            plugin = load()
            self._manager.register(plugin, name=plugin_name)
        except Exception as error:  # a broken plugin must not take the others down
            self._fail(plugin_name, source, _one_line(error))
            return
        self._sources[plugin_name] = source
        unknown = [caller.name for caller in self._manager.get_hookcallers(plugin) or [] if not caller.has_spec()]
        for hook_name in unknown:
            self._fail(plugin_name, source, f"defines {hook_name!r}, which is not a rulekit hook")

    def _collect(self) -> None:
        for kind in KINDS.values():
            for impl in getattr(self._manager.hook, kind.hook).get_hookimpls():
                self._collect_from(kind, impl.plugin_name, impl.function)
        self._mark_clashes()
        order = list(KINDS) + [FAILED_PLUGIN_KIND]
        self.entries.sort(key=lambda entry: (order.index(entry.kind), entry.name, entry.plugin))

    def _collect_from(self, kind: Kind, plugin_name: str, hook: Callable[[], Any]) -> None:
        source = self._sources[plugin_name]
        try:
            objects = hook()
        except Exception as error:
            self._fail(plugin_name, source, f"{kind.hook} raised {_one_line(error)}", kind.name)
            return
        if not isinstance(objects, (list, tuple)):
            self._fail(plugin_name, source, f"{kind.hook} returned {type(objects).__name__}, not a list", kind.name)
            return
        for obj in objects:
            problem = _check_common(obj) or kind.check(obj)
            if problem:
                self._fail(plugin_name, source, f"{kind.hook}: {problem}", kind.name)
                continue
            description = str(obj.description).strip().splitlines()
            self.entries.append(
                Entry(
                    kind.name,
                    obj.name,
                    plugin_name,
                    source.distribution,
                    source.version,
                    description[0] if description else "",
                    obj=obj,
                )
            )

    def _mark_clashes(self) -> None:
        by_key: dict[tuple[str, str], list[Entry]] = {}
        for entry in self.entries:
            if entry.status == "ok":
                by_key.setdefault((entry.kind, entry.name), []).append(entry)
        for (kind, name), entries in by_key.items():
            if len(entries) > 1:
                for entry in entries:
                    others = ", ".join(repr(other.plugin) for other in entries if other is not entry)
                    entry.status = "clash"
                    entry.error = f"{kind} {name!r} is also registered by plugin {others}"

    def names(self, kind: str) -> list[str]:
        """Sorted names of the usable objects of ``kind``."""
        check_kind(kind)
        return sorted({entry.name for entry in self.entries if entry.kind == kind and entry.status == "ok"})

    def get(self, kind: str, name: str) -> Any:
        """The object of ``kind`` called ``name``; stops with a clear error if there is not one."""
        kind_info = check_kind(kind)
        matches = [entry for entry in self.entries if entry.kind == kind and entry.name == name]
        usable = [entry for entry in matches if entry.status != "failed"]
        if len(usable) > 1:
            plugins = " and ".join(
                f"{entry.plugin!r} ({entry.distribution} {entry.version})".replace(" )", ")") for entry in usable
            )
            raise RulekitError(f"{kind} {name!r} is registered by more than one plugin: {plugins}; uninstall or disable one")
        if not usable:
            known = ", ".join(self.names(kind)) or "none"
            raise UnknownNameError(f"unknown {kind} {name!r}; known {kind_info.plural}: {known}")
        return usable[0].obj

    def task(self, name: str):
        """The task called ``name``."""
        return self.get("task", name)

    @property
    def failures(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.status == "failed"]


def _check_common(obj: Any) -> str | None:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"{type(obj).__name__} has no valid name (lowercase letters, digits, '-' and '_'): {name!r}"
    if not isinstance(getattr(obj, "description", None), str):
        return f"{type(obj).__name__} {name!r} has no description string"
    return None


def _entry_points() -> list[tuple[importlib.metadata.EntryPoint, _Source]]:
    found: dict[tuple[str, str], tuple[importlib.metadata.EntryPoint, _Source]] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        source = _Source(dist.name if dist else "?", dist.version if dist else "")
        found.setdefault((entry_point.name, entry_point.value), (entry_point, source))
    return sorted(found.values(), key=lambda item: item[0].name)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry, so the next ``get_registry`` loads plugins anew."""
    global _registry
    _registry = None
