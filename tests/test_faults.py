"""Faults: a killed stage, damaged or unsafe files, broken plugins, a full disk, a diverging loss.

Each case checks what the user is left with: one line naming the problem and exit code 2 (never a
traceback), and every output a later stage reads either complete or absent, never half-written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save

from rulekit import cli
from rulekit.checkpoints import checkpoint_folders, load_checkpoint
from rulekit.classifier.network import load_classifier
from rulekit.dataset import read_dataset, read_image_set
from rulekit.errors import DataFileError
from rulekit.models.ddpm import DDPMProcess
from rulekit.registry import get_registry, reset_registry
from rulekit.storage import load_json

from conftest import BUILTIN_TASKS, SMOKE_PARAMS, write_params

TASK, MODEL = "bars", "ddpm-unet"
WEIGHTS = "diffusion_pytorch_model.safetensors"
DATA = Path("data", TASK)
MODEL_DIR = Path("models", TASK, MODEL)
CHECKPOINTS = Path("checkpoints", TASK, MODEL)
SAMPLES = Path("samples", TASK, MODEL, "none")
CLASSIFIER = Path("classifiers", TASK, MODEL)
EVALUATION = Path("evaluation", TASK, MODEL, "none")
METRICS = Path("metrics", TASK, MODEL, "guidance", "none.json")
#: Smoke training: checkpoints at steps 5, 10 and 12 (the last two kept).
STEPS, CHECKPOINT_EVERY = 12, 5
#: What a killed or failed write may leave beside an output: a dot-name no reader ever opens.
LEFTOVER = re.compile(r"^\..+\.(tmp|old)$")
_SCRIPT = Path(sys.executable).with_name("rulekit")
#: The installed ``rulekit`` command, as a user runs it.
RULEKIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rulekit.cli"]


# ---------------------------------------------------------------------------------------------
# Running the CLI and reading what it wrote


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a user error prints, checked to be one line, an error and no traceback."""
        lines = self.err.strip().splitlines()
        assert "Traceback" not in self.err, self.err
        assert self.code == 2, (self.code, self.err)
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        return lines[0]


def run_in(folder: Path, *args: str) -> Result:
    """``rulekit ARGS`` run in this process with ``folder`` as the working directory."""
    reset_registry()
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main(list(args))
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    else:
        code = 0
    finally:
        os.chdir(previous)
    return Result(code, out.getvalue(), err.getvalue())


def run_ok(folder: Path, *args: str) -> Result:
    result = run_in(folder, *args)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    return result


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def leftovers(root: Path) -> list[str]:
    """Names of temporary files and folders anywhere under ``root``."""
    return [str(path.relative_to(root)) for path in root.rglob("*") if LEFTOVER.match(path.name)]


def _under(files: dict[str, bytes], root: Path) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if Path(name).is_relative_to(root)}


def network_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The trained network, loaded by the model family as ``sample`` loads it."""
    network = get_registry().get("model", MODEL).load_network(folder)
    return {name: tensor.detach().clone() for name, tensor in network.state_dict().items()}


def read_output(kind: str, path: Path):
    """Load an output with the reader the next stage uses; stops if it is damaged."""
    if kind == "data":
        return read_dataset(path)
    if kind == "samples":
        return read_image_set(path, extras=("valid",))
    if kind == "model":
        load_json(path / "rulekit.json")
        return network_weights(path)
    if kind == "classifier":
        return load_classifier(path)
    if kind == "metrics":
        return load_json(path)
    raise ValueError(kind)


def pipeline_params(folder: Path) -> Path:
    return write_params(
        folder / "params.yaml",
        guidance=["none", "classifier"],
        guidance_settings={"classifier": {"scale": 2.0}},
        train={**SMOKE_PARAMS["train"], "steps": STEPS, "checkpoint_every": CHECKPOINT_EVERY},
    )


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread: on a shared 2-core machine, spinning OpenMP threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, single_thread) -> Path:
    """A folder where every stage up to ``evaluate --guidance none`` has run, uninterrupted."""
    folder = tmp_path_factory.mktemp("pipeline")
    pipeline_params(folder)
    for args in (("generate", TASK), ("train", TASK), ("sample", TASK), ("train-classifier", TASK),
                 ("evaluate", TASK, "--guidance", "none")):
        run_ok(folder, *args)
    return folder


@pytest.fixture
def workspace(pipeline, tmp_path) -> Path:
    """A private copy of the finished pipeline folder."""
    folder = tmp_path / "work"
    shutil.copytree(pipeline, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# 1. SIGKILL in the middle of every stage

#: Loaded at interpreter start-up through PYTHONPATH: holds the process just before the Nth rename
#: that touches a chosen path, so a SIGKILL lands at a known moment of the stage's work.
PAUSE_HOOK = textwrap.dedent(
    '''
    import fnmatch
    import json
    import os
    import time

    _pattern = os.environ.get("PAUSE_AT_RENAME")
    if _pattern:
        _nth = int(os.environ["PAUSE_AT_RENAME_NTH"])
        _seen = 0
        _rename = os.replace

        def _replace(source, destination, *args, **kwargs):
            global _seen
            touched = [os.path.abspath(os.fspath(path)) for path in (source, destination)]
            if any(fnmatch.fnmatch(path, _pattern) for path in touched):
                _seen += 1
                if _seen == _nth:
                    paused = os.environ["PAUSED_FILE"]
                    with open(paused + ".part", "w") as handle:
                        json.dump({"source": touched[0], "destination": touched[1]}, handle)
                    _rename(paused + ".part", paused)
                    time.sleep(3600)
            return _rename(source, destination, *args, **kwargs)

        os.replace = _replace
    '''
)


@dataclass(frozen=True)
class Kill:
    """Where to kill a stage: at the ``nth`` rename touching a path that matches ``pause_at``."""

    args: tuple[str, ...]
    pause_at: str
    nth: int
    output: Path
    kind: str


KILLS = {
    # Between retiring the old data folder and publishing the new one: the worst moment.
    "generate": Kill(("generate", TASK), f"*/{DATA}", 2, DATA, "data"),
    # While publishing the checkpoint of step 10: only step 5 is complete.
    "train": Kill(("train", TASK), f"*/{CHECKPOINTS}/*/step-{2 * CHECKPOINT_EVERY:08d}", 1, MODEL_DIR, "model"),
    # Every sample written and measured, the old folder not yet retired.
    "sample": Kill(("sample", TASK), f"*/{SAMPLES}", 1, SAMPLES, "samples"),
    "train-classifier": Kill(("train-classifier", TASK), f"*/{CLASSIFIER}", 2, CLASSIFIER, "classifier"),
    # The new metrics are written under a temporary name, not yet renamed over the old ones.
    "evaluate": Kill(("evaluate", TASK, "--guidance", "none"), f"*/{METRICS}", 1, METRICS, "metrics"),
}


@dataclass
class Killed:
    folder: Path
    before: dict[str, bytes]
    paused: dict
    stderr: str
    returncode: int


@pytest.fixture(scope="module")
def killed(pipeline, tmp_path_factory) -> dict[str, Killed]:
    """Each stage run as the console script in its own copy of the pipeline folder, SIGKILLed
    mid-work. The five run side by side, so the suite pays for one start-up rather than five."""
    root = tmp_path_factory.mktemp("killed")
    hook_dir = root / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(PAUSE_HOOK)
    running = {}
    for stage, kill in KILLS.items():
        folder = root / stage
        shutil.copytree(pipeline, folder)
        if stage == "train":
            shutil.rmtree(folder / "checkpoints")  # a fresh run; the previous model stays
        env = {
            **os.environ,
            "RULEKIT_QUIET": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])),
            "PAUSE_AT_RENAME": str(folder.resolve()).replace("[", "[[]") + kill.pause_at[1:],
            "PAUSE_AT_RENAME_NTH": str(kill.nth),
            "PAUSED_FILE": str(root / f"{stage}.paused"),
        }
        before = snapshot(folder)
        with open(root / f"{stage}.stderr", "w") as stderr:
            process = subprocess.Popen([*RULEKIT, *kill.args], cwd=folder, env=env,
                                       stdout=subprocess.DEVNULL, stderr=stderr)
        running[stage] = (process, folder, before)
    deadline = time.monotonic() + 300
    results = {}
    try:
        while len(results) < len(running):
            for stage, (process, folder, before) in running.items():
                if stage in results:
                    continue
                paused, stderr = root / f"{stage}.paused", root / f"{stage}.stderr"
                if paused.exists():
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=60)
                    results[stage] = Killed(folder, before, json.loads(paused.read_text()), stderr.read_text(), process.returncode)
                elif process.poll() is not None:
                    raise AssertionError(f"{stage} ended before reaching its kill point: {stderr.read_text()}")
            assert time.monotonic() < deadline, f"stages never reached their kill point: {set(running) - set(results)}"
            time.sleep(0.05)
    finally:
        for process, _, _ in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.parametrize("stage", list(KILLS))
def test_a_stage_killed_mid_work_leaves_no_half_written_output_and_reruns(stage, killed, pipeline):
    kill, run = KILLS[stage], killed[stage]
    folder, target = run.folder, run.folder / kill.output
    assert run.returncode == -signal.SIGKILL and "Traceback" not in run.stderr, run.stderr

    # Killed with the new output complete, but only under a temporary name.
    staging_root = next((folder / CHECKPOINTS).iterdir()) if stage == "train" else target.parent
    staged = [path for path in staging_root.iterdir() if path.name.endswith(".tmp")]
    assert len(staged) == 1, staged
    if stage == "train":
        assert load_checkpoint(staged[0])["step"] == 2 * CHECKPOINT_EVERY
    else:
        read_output(kill.kind, staged[0])

    # Where the next stage looks: the previous complete output, or nothing.
    touched = {Path(run.paused["source"]), Path(run.paused["destination"])}
    if stage == "train":
        assert folder.resolve() / CHECKPOINTS / staged[0].parent.name / f"step-{2 * CHECKPOINT_EVERY:08d}" in touched
    else:
        assert folder.resolve() / kill.output in touched, run.paused
    if kill.nth == 1:
        assert _under(snapshot(folder), kill.output) == _under(run.before, kill.output), "changed by an unfinished stage"
        read_output(kill.kind, target)
    else:
        assert not target.exists()
        with pytest.raises(DataFileError):
            read_output(kill.kind, target)
    # Anything else left beside it has a dot-name that no reader opens.
    expected = {path.name for path in (pipeline / kill.output).parent.iterdir()}
    assert all(path.name in expected or LEFTOVER.match(path.name) for path in target.parent.iterdir())

    if stage == "train":
        (run_dir,) = (folder / CHECKPOINTS).iterdir()
        assert [step for step, _ in checkpoint_folders(run_dir)] == [CHECKPOINT_EVERY]
        assert load_checkpoint(run_dir / f"step-{CHECKPOINT_EVERY:08d}")["step"] == CHECKPOINT_EVERY

    rerun = run_ok(folder, *kill.args)
    read_output(kill.kind, target)
    if stage == "train":
        resumed = re.search(r"resumed at step (\d+)", rerun.err)
        assert resumed and int(resumed.group(1)) == CHECKPOINT_EVERY > 0, rerun.err
        expected_weights, resumed_weights = network_weights(pipeline / MODEL_DIR), network_weights(target)
        assert expected_weights.keys() == resumed_weights.keys()
        for name in expected_weights:
            assert torch.equal(expected_weights[name], resumed_weights[name]), name
    elif kill.kind == "metrics":
        assert target.read_bytes() == (pipeline / kill.output).read_bytes()
    else:
        # The rerun ends exactly where an uninterrupted run did.
        main_file = "classifier.safetensors" if kill.kind == "classifier" else "data.safetensors"
        assert (target / main_file).read_bytes() == (pipeline / kill.output / main_file).read_bytes()


# ---------------------------------------------------------------------------------------------
# 2. Truncated and corrupt files


def _checkpoint_file(folder: Path, name: str) -> Path:
    (run_dir,) = (folder / CHECKPOINTS).iterdir()
    return (run_dir / f"step-{STEPS:08d}" / name).relative_to(folder)


#: A damaged input and the command that reads it first.
DAMAGED_INPUTS = {
    "data": (lambda folder: DATA / "data.safetensors", ("train", TASK)),
    "checkpoint-tensors": (lambda folder: _checkpoint_file(folder, "tensors.safetensors"), ("train", TASK)),
    "checkpoint-state": (lambda folder: _checkpoint_file(folder, "state.json"), ("train", TASK)),
    "model": (lambda folder: MODEL_DIR / WEIGHTS, ("sample", TASK)),
    "samples": (lambda folder: SAMPLES / "data.safetensors", ("train-classifier", TASK)),
    "classifier": (lambda folder: CLASSIFIER / "classifier.safetensors", ("evaluate", TASK, "--guidance", "classifier")),
}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])


def scramble(path: Path) -> None:
    """Flip bits in the first 64 bytes: a safetensors header (or a JSON file) stops parsing."""
    data = path.read_bytes()
    path.write_bytes(bytes(byte ^ 0xA5 for byte in data[:64]) + data[64:])


def replace_with_folder(path: Path) -> None:
    """A folder where the file should be: the file cannot even be read."""
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [truncate, scramble, replace_with_folder])
@pytest.mark.parametrize("what", list(DAMAGED_INPUTS))
def test_a_damaged_file_stops_its_reader_by_name_and_nothing_is_overwritten(workspace, what, damage):
    locate, args = DAMAGED_INPUTS[what]
    relative = locate(workspace)
    damage(workspace / relative)
    before = snapshot(workspace)
    line = run_in(workspace, *args).error_line
    assert str(relative) in line, line
    assert snapshot(workspace) == before
    assert leftovers(workspace) == []


def test_checkpoint_tensors_that_do_not_fit_the_network_stop_by_name(workspace):
    """A well-formed checkpoint whose tensors have the wrong shapes is refused, not half-applied."""
    relative = _checkpoint_file(workspace, "tensors.safetensors")
    tensors = load_file(workspace / relative)
    (workspace / relative).write_bytes(save({name: tensor.flatten()[:1].clone() for name, tensor in tensors.items()}))
    before = snapshot(workspace)
    line = run_in(workspace, "train", TASK).error_line
    assert str(relative.parent) in line, line
    assert snapshot(workspace) == before


# ---------------------------------------------------------------------------------------------
# 3. Pickles where arrays, checkpoints, models or classifiers are expected


class Trap:
    """Unpickling this creates the file ``path``: proof that the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def plain_pickle(marker: Path) -> bytes:
    return pickle.dumps({"images": Trap(marker), "features": np.zeros((2, 2))})


def torch_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "trap": Trap(marker)}, buffer)
    return buffer.getvalue()


def npy_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([Trap(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def npz_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.array([Trap(marker)], dtype=object), features=np.zeros((2, 2)))
    return buffer.getvalue()


def test_the_traps_are_live(tmp_path):
    """Each payload does run code when loaded the unsafe way, so the cases below prove something."""
    loaders = {
        plain_pickle: pickle.loads,
        torch_pickle: lambda data: torch.load(io.BytesIO(data), weights_only=False),
        npy_pickle: lambda data: np.load(io.BytesIO(data), allow_pickle=True),
        npz_pickle: lambda data: np.load(io.BytesIO(data), allow_pickle=True)["images"],
    }
    for make, load in loaders.items():
        marker = tmp_path / make.__name__
        load(make(marker))
        assert marker.exists(), make.__name__


#: Where the pickle goes, what it replaces (removed first), how it is made, and the command.
PICKLES = {
    "data-pickle": (DATA / "data.safetensors", None, plain_pickle, ("train", TASK)),
    "data-npy": (DATA / "data.safetensors", None, npy_pickle, ("train", TASK)),
    "data-npz-instead": (DATA / "data.npz", DATA / "data.safetensors", npz_pickle, ("train", TASK)),
    "checkpoint-torch-save": (None, None, torch_pickle, ("train", TASK)),
    "model-torch-save": (MODEL_DIR / WEIGHTS, None, torch_pickle, ("sample", TASK)),
    "model-bin-instead": (MODEL_DIR / "diffusion_pytorch_model.bin", MODEL_DIR / WEIGHTS, torch_pickle, ("sample", TASK)),
    "samples-npy": (SAMPLES / "data.safetensors", None, npy_pickle, ("train-classifier", TASK)),
    "classifier-torch-save": (CLASSIFIER / "classifier.safetensors", None, torch_pickle,
                              ("evaluate", TASK, "--guidance", "classifier")),
}


@pytest.mark.parametrize("what", list(PICKLES))
def test_a_pickle_is_refused_by_name_and_never_run(workspace, tmp_path, what):
    where, replaces, make, args = PICKLES[what]
    if where is None:
        where = _checkpoint_file(workspace, "tensors.safetensors")
    marker = tmp_path / "the-pickle-ran"
    if replaces is not None:
        (workspace / replaces).unlink()
    (workspace / where).write_bytes(make(marker))
    before = snapshot(workspace)
    line = run_in(workspace, *args).error_line
    expected = replaces or where
    assert str(expected) in line or (str(expected.parent) in line and expected.name in line), line
    assert not marker.exists()
    assert snapshot(workspace) == before


# ---------------------------------------------------------------------------------------------
# 4. Broken, clashing and slow plugins

SLOW_IMPORT_S = 2
#: module name: (distribution, entry point name, source)
PLUGINS = {
    "raising_rules": ("raising-rules", "raising", '''
        from rulekit import hookimpl

        @hookimpl
        def rulekit_guidance():
            raise RuntimeError("the oracle is out")
        '''),
    "wrong_type_rules": ("wrong-type-rules", "wrong_type", '''
        from rulekit import hookimpl

        @hookimpl
        def rulekit_tasks():
            return {"name": "dict-task"}
        '''),
    "copycat_rules": ("copycat-rules", "copycat", '''
        from rulekit import hookimpl
        from rulekit.tasks.shadow import Shadow

        @hookimpl
        def rulekit_tasks():
            return [Shadow()]
        '''),
    # Two distributions whose entry points share a name: the second to load is refused.
    "twin_one": ("twin-one", "twin", '''
        from rulekit import hookimpl

        @hookimpl
        def rulekit_metrics():
            return []
        '''),
    "twin_two": ("twin-two", "twin", '''
        from rulekit import hookimpl

        @hookimpl
        def rulekit_metrics():
            return []
        '''),
    "slow_rules": ("slow-rules", "slow", f'''
        import time

        from rulekit import hookimpl
        from rulekit.tasks.bars import Bars

        time.sleep({SLOW_IMPORT_S})

        class SlowBars(Bars):
            name = "slow-bars"
            description = "Bars, from a plugin that is slow to import."

        @hookimpl
        def rulekit_tasks():
            return [SlowBars()]
        '''),
}


def install_fake_plugins(site: Path) -> None:
    for module, (distribution, entry_point, source) in PLUGINS.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist_info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
        (dist_info / "entry_points.txt").write_text(f"[rulekit]\n{entry_point} = {module}\n")


def test_broken_clashing_and_slow_plugins_are_listed_and_the_rest_still_works(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_fake_plugins(site)
    write_params(tmp_path / "params.yaml")
    env = {**os.environ, "RULEKIT_QUIET": "1", "COLUMNS": "250",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    commands = {
        "json": ("list-plugins", "--json"),
        "table": ("list-plugins",),
        "bars": ("generate", TASK),
        "shadow": ("generate", "shadow"),
    }
    started = time.monotonic()
    running = {name: subprocess.Popen([*RULEKIT, *args], cwd=tmp_path, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, args in commands.items()}
    done = {name: (process.communicate(timeout=120), process.returncode) for name, process in running.items()}
    elapsed = time.monotonic() - started
    for (_, stderr), _ in done.values():
        assert "Traceback" not in stderr, stderr

    (listing, errors), code = done["json"]
    assert code == 0, errors
    rows = json.loads(listing)
    failed = {row["plugin"]: row for row in rows if row["status"] == "failed"}
    assert set(failed) == {"raising", "wrong_type", "twin"}
    assert failed["raising"]["kind"] == "guidance"
    assert failed["raising"]["error"] == "rulekit_guidance raised RuntimeError: the oracle is out"
    assert failed["wrong_type"]["kind"] == "task"
    assert failed["wrong_type"]["error"] == "rulekit_tasks returned dict, not a list"
    assert failed["twin"]["kind"] == "plugin" and failed["twin"]["distribution"] in {"twin-one", "twin-two"}
    assert failed["twin"]["error"] == "a plugin named 'twin' is already registered"
    clashing = [row for row in rows if row["status"] == "clash"]
    assert {(row["name"], row["plugin"]) for row in clashing} == {("shadow", "rulekit.tasks.shadow"), ("shadow", "copycat")}
    usable = {row["name"] for row in rows if row["kind"] == "task" and row["status"] == "ok"}
    assert usable - {"tally"} == (set(BUILTIN_TASKS) - {"shadow"}) | {"slow-bars"}
    assert {row["name"] for row in rows if row["kind"] == "guidance" and row["status"] == "ok"} >= {"none", "classifier"}
    # The slow import delays start-up, and nothing more.
    assert elapsed >= SLOW_IMPORT_S

    (table, errors), code = done["table"]
    assert code == 0, errors
    assert "FAILED: rulekit_guidance raised RuntimeError: the oracle is out" in table
    assert "CLASH: task 'shadow' is also registered by plugin" in table
    assert "slow-bars" in table

    (_, errors), code = done["bars"]
    assert code == 0, errors
    assert read_dataset(tmp_path / DATA).images.shape == (64, 16, 16)

    (_, errors), code = done["shadow"]
    result = Result(code, "", errors)
    assert "'rulekit.tasks.shadow'" in result.error_line and "'copycat'" in result.error_line
    assert not (tmp_path / "data" / "shadow").exists()


# ---------------------------------------------------------------------------------------------
# 5. A full disk, an unwritable folder, a file where a folder must be

#: A stage, its output, the kind of reader that loads it, and where its first write goes.
WRITERS = {
    "generate": (("generate", TASK), DATA, "data", DATA),
    "train": (("train", TASK), MODEL_DIR, "model", CHECKPOINTS),
    "sample": (("sample", TASK), SAMPLES, "samples", SAMPLES),
    "train-classifier": (("train-classifier", TASK), CLASSIFIER, "classifier", CLASSIFIER),
    "evaluate": (("evaluate", TASK, "--guidance", "none"), EVALUATION, "samples", EVALUATION),
}


@pytest.mark.parametrize("stage", list(WRITERS))
def test_a_full_disk_stops_with_one_line_and_keeps_the_previous_outputs(workspace, monkeypatch, stage):
    args, output, kind, first_write = WRITERS[stage]
    if stage == "train":
        shutil.rmtree(workspace / "checkpoints")  # a fresh run, which must write checkpoints

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = snapshot(workspace)
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        line = run_in(workspace, *args).error_line
    written = re.fullmatch(r"error: cannot write (\S+): No space left on device", line)
    assert written and Path(written.group(1)).is_relative_to(first_write), line
    assert snapshot(workspace) == before
    assert leftovers(workspace) == []
    # With space again, the same command completes.
    run_ok(workspace, *args)
    read_output(kind, workspace / output)


def _refused_inside(folder: Path, create):
    """``create`` (``os.mkdir`` or ``os.open``) refusing new entries in ``folder`` as the kernel
    refuses them in a folder without write permission."""
    inside = os.path.realpath(folder)

    def refused(path, *args, **kwargs):
        if os.path.dirname(os.path.realpath(path)) == inside:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return create(path, *args, **kwargs)

    return refused


def test_an_unwritable_output_folder_stops_with_one_line(workspace, monkeypatch):
    data_root = workspace / "data"
    before = snapshot(workspace)
    data_root.chmod(0o500)
    try:
        with monkeypatch.context() as patch:
            if os.access(data_root, os.W_OK):
                # Permissions do not bind root: refuse what the kernel would refuse anyone else.
                patch.setattr(os, "mkdir", _refused_inside(data_root, os.mkdir))
                patch.setattr(os, "open", _refused_inside(data_root, os.open))
            line = run_in(workspace, "generate", TASK).error_line
    finally:
        data_root.chmod(0o755)
    assert line == f"error: cannot write {DATA}: Permission denied"
    assert snapshot(workspace) == before
    assert leftovers(workspace) == []


def test_a_file_where_an_output_folder_must_be_stops_with_one_line(workspace):
    """Training a fresh run whose checkpoint folder cannot be made: nothing else is touched."""
    shutil.rmtree(workspace / "checkpoints")
    (workspace / "checkpoints").write_text("not a folder")
    before = snapshot(workspace)
    line = run_in(workspace, "train", TASK).error_line
    pattern = rf"error: cannot write {CHECKPOINTS}/[0-9a-f]{{16}}/step-{CHECKPOINT_EVERY:08d}: checkpoints is a file, not a folder"
    assert re.fullmatch(pattern, line), line
    assert snapshot(workspace) == before

    (workspace / "blocker").write_text("not a folder")
    line = run_in(workspace, "generate", TASK, "--out", "blocker/bars").error_line
    assert line == "error: cannot write blocker/bars: blocker is a file, not a folder"
    assert (workspace / "blocker").read_text() == "not a folder"


# ---------------------------------------------------------------------------------------------
# 6. A loss that stops being finite

BAD_STEP = 7


@pytest.mark.parametrize("poison", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(workspace, pipeline, monkeypatch, poison):
    shutil.rmtree(workspace / "checkpoints")
    original = DDPMProcess.loss
    calls = []

    def poisoned(self, network, clean, generator):
        loss = original(self, network, clean, generator)
        calls.append(1)
        return loss * poison if len(calls) == BAD_STEP else loss

    before = snapshot(workspace)
    with monkeypatch.context() as patch:
        patch.setattr(DDPMProcess, "loss", poisoned)
        line = run_in(workspace, "train", TASK).error_line
    (run_dir,) = (workspace / CHECKPOINTS).iterdir()
    good = run_dir / f"step-{CHECKPOINT_EVERY:08d}"
    assert line == (
        f"error: training loss became non-finite at step {BAD_STEP}; the last good checkpoint is "
        f"{good.relative_to(workspace)}; lower train.learning_rate"
    )
    # The previous model is untouched; the only new files are the last good checkpoint's.
    after = snapshot(workspace)
    assert {name: data for name, data in after.items() if not name.startswith("checkpoints")} == before
    assert [step for step, _ in checkpoint_folders(run_dir)] == [CHECKPOINT_EVERY]
    state = load_checkpoint(good)
    assert state["step"] == CHECKPOINT_EVERY
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values())

    resumed = run_ok(workspace, "train", TASK)
    assert f"resumed at step {CHECKPOINT_EVERY}" in resumed.err, resumed.err
    expected, trained = network_weights(pipeline / MODEL_DIR), network_weights(workspace / MODEL_DIR)
    for name in expected:
        assert torch.equal(expected[name], trained[name]), name
