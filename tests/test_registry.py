"""The plugin registry: built-ins, entry points, clashes and broken plugins."""

import json
import textwrap
import types

import numpy as np
import pytest

from rulekit import hookimpl
from rulekit.errors import RulekitError, UnknownNameError
from rulekit.registry import Registry, get_registry
from rulekit.tasks import Task
from rulekit.tasks.bars import Bars

from conftest import BUILTIN_TASKS, REPO, run_console_script


def plugin(**hooks) -> types.SimpleNamespace:
    """An in-process plugin object whose attributes are hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def test_builtin_tasks_are_registered_by_rulekit():
    registry = Registry(use_entry_points=False)
    assert registry.names("task") == sorted(BUILTIN_TASKS)
    rows = {entry.name: entry for entry in registry.entries}
    assert rows["shadow"].plugin == "rulekit.tasks.shadow"
    assert rows["shadow"].distribution == "rulekit"
    assert rows["shadow"].status == "ok"
    assert registry.failures == []


def test_entry_point_plugin_is_discovered():
    registry = get_registry()
    assert "tally" in registry.names("task"), "install the example plugin: pip install ./plugins/rulekit-tally"
    row = next(entry for entry in registry.entries if entry.name == "tally")
    assert (row.plugin, row.distribution, row.version) == ("tally", "rulekit-tally", "0.1.0")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown task 'nope'; known tasks: bars, mirror, perspective, shadow"):
        Registry(use_entry_points=False).task("nope")
    with pytest.raises(UnknownNameError, match="known kinds: task, model, guidance, metric"):
        Registry(use_entry_points=False).names("tasks")


def test_clash_names_both_plugins_and_other_names_still_work():
    duplicate = plugin(rulekit_tasks=lambda: [Bars()])
    registry = Registry(use_entry_points=False, extra_plugins={"copycat": duplicate})
    clashing = [entry for entry in registry.entries if entry.name == "bars"]
    assert {entry.status for entry in clashing} == {"clash"}
    assert {entry.plugin for entry in clashing} == {"rulekit.tasks.bars", "copycat"}
    with pytest.raises(RulekitError, match="'rulekit.tasks.bars'.*'copycat'|'copycat'.*'rulekit.tasks.bars'"):
        registry.task("bars")
    assert registry.task("mirror").name == "mirror"


class MissingMeasurer(Task):
    name = "half-done"
    description = "A task without a measurer."
    feature_names = ("a",)

    def sample_features(self, rng, n):
        return np.zeros((n, 1))


@pytest.mark.parametrize(
    "hook, problem",
    [
        (lambda: 1 / 0, "raised ZeroDivisionError"),
        (lambda: "bars", "returned str, not a list"),
        (lambda: [object()], "has no valid name"),
        (lambda: [MissingMeasurer()], "raised TypeError: Can't instantiate abstract class MissingMeasurer"),
        (lambda: [types.SimpleNamespace(name="fake", description="not a task")], "is not a rulekit.tasks.Task"),
    ],
)
def test_broken_plugin_is_reported_and_isolated(hook, problem):
    registry = Registry(use_entry_points=False, extra_plugins={"broken": plugin(rulekit_tasks=hook)})
    (failure,) = registry.failures
    assert failure.plugin == "broken" and failure.kind == "task"
    assert problem in failure.error
    assert registry.names("task") == sorted(BUILTIN_TASKS)


def test_hook_with_a_misspelt_name_is_reported():
    registry = Registry(use_entry_points=False, extra_plugins={"typo": plugin(rulekit_task=lambda: [])})
    (failure,) = registry.failures
    assert "'rulekit_task', which is not a rulekit hook" in failure.error


def test_plugins_can_be_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("RULEKIT_DISABLE_PLUGINS", "rulekit.tasks.mirror, tally")
    registry = Registry()
    assert "mirror" not in registry.names("task") and "tally" not in registry.names("task")
    assert "bars" in registry.names("task")


def test_entry_point_that_fails_to_import_is_a_failed_row(tmp_path):
    """A distribution whose entry point names a missing module, discovered on sys.path."""
    dist_info = tmp_path / "broken_rules-1.2.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-rules\nVersion: 1.2\n")
    (dist_info / "entry_points.txt").write_text("[rulekit]\nbroken = broken_rules_missing_module\n")
    result = run_console_script("list-plugins", "--json", cwd=REPO, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["name"] == "broken" and failed[0]["distribution"] == "broken-rules"
    assert "ModuleNotFoundError" in failed[0]["error"]
    assert {row["name"] for row in rows if row["kind"] == "task"} >= set(BUILTIN_TASKS)


def test_entry_point_plugin_that_raises_keeps_builtins_working(tmp_path):
    package = tmp_path / "angry_rules.py"
    package.write_text(textwrap.dedent(
        """
        from rulekit import hookimpl

        @hookimpl
        def rulekit_tasks():
            raise RuntimeError("cannot open the rule book")
        """
    ))
    dist_info = tmp_path / "angry_rules-0.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: angry-rules\nVersion: 0.3\n")
    (dist_info / "entry_points.txt").write_text("[rulekit]\nangry = angry_rules\n")
    listing = run_console_script("list-plugins", cwd=REPO, env={"PYTHONPATH": str(tmp_path), "COLUMNS": "200"})
    assert listing.returncode == 0
    assert "FAILED" in listing.stdout and "cannot open the rule book" in listing.stdout
    generate = run_console_script("generate", "bars", "--params", str(REPO / "params.yaml"), "--out", str(tmp_path / "bars"),
                                  cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert generate.returncode == 0, generate.stderr
    assert (tmp_path / "bars" / "data.safetensors").exists()


def test_listing_prints_a_plugins_error_text_verbatim(monkeypatch, capsys):
    def bracketed():
        raise RuntimeError("bad [bold]value[/bold] in [rulekit]")

    registry = Registry(use_entry_points=False, extra_plugins={"weird": plugin(rulekit_tasks=bracketed)})
    monkeypatch.setattr("rulekit.registry.get_registry", lambda: registry)
    monkeypatch.setenv("COLUMNS", "250")
    from rulekit import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["list-plugins", "--kind", "task"])
    assert done.value.code == 0
    assert "FAILED: rulekit_tasks raised RuntimeError: bad [bold]value[/bold] in [rulekit]" in capsys.readouterr().out
