"""Reading and writing rulekit's files: atomically, and never through pickle.

Arrays live in safetensors files, metadata in JSON. Every write goes to a temporary name in the
destination folder and is renamed into place, so a killed process leaves either the old file or
the new one, never half of one. Every read or write failure names the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from rulekit.errors import DataFileError, RulekitError


class WriteError(RulekitError, OSError):
    """An output that cannot be written: the disk is full, permission is denied, or a file
    stands where a folder must be. Whatever the output held before is left as it was.

    Still an ``OSError``, so callers that handle those keep doing so; the CLI reports it as one line.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((parent for parent in reversed(path.parents) if parent.exists() and not parent.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else f"cannot create its folder {path.parent} ({_reason(error)})"
        raise WriteError(path, reason) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_sibling(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    # mkstemp makes owner-only files; published files get the usual permissions.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; an OS failure (a full
    disk, no permission) stops with a ``WriteError`` naming ``path``."""
    path = Path(path)
    _make_parent(path)
    try:
        temporary = _temporary_sibling(path)
    except OSError as error:
        raise WriteError(path, _reason(error)) from None
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteError(path, _reason(error)) from None
        raise


def write_json_atomic(path: str | os.PathLike, payload: object) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def write_csv_atomic(path: str | os.PathLike, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Write dict rows as CSV with ``columns`` in that order, atomically; None is written empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[column] is None else row[column] for column in columns])
    write_bytes_atomic(path, buffer.getvalue().encode())


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Save named arrays to a safetensors file, atomically."""
    contiguous = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    write_bytes_atomic(path, save_safetensors(contiguous, metadata=metadata))


def load_arrays(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load named arrays from a safetensors file; a missing, corrupt or incomplete file stops."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"{path} does not exist; run the stage that writes it first") from None
    except OSError as error:
        raise DataFileError(f"{path} cannot be read: {error.strerror}") from None
    try:
        arrays = load_safetensors(data)
    except (SafetensorError, ValueError, OverflowError) as error:
        raise DataFileError(f"{path} is not a valid safetensors file ({error}); delete it and re-run its stage") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DataFileError(f"{path} lacks the arrays {', '.join(missing)}; delete it and re-run its stage")
    return arrays


def load_json(path: str | os.PathLike) -> dict:
    """Load a JSON object; a missing or malformed file stops with its name."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(f"{path} does not exist; run the stage that writes it first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataFileError(f"{path} is not valid JSON ({error}); delete it and re-run its stage") from None
    if not isinstance(payload, dict):
        raise DataFileError(f"{path} does not hold a JSON object; delete it and re-run its stage")
    return payload


@contextlib.contextmanager
def replace_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` only if the block completes.

    On an exception the temporary folder is removed and ``path`` is left as it was; an OS failure
    (a full disk, no permission) stops with a ``WriteError`` naming the file under ``path``.
    """
    path = Path(path)
    _make_parent(path)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(staging, 0o777 & ~_umask())
    except OSError as error:
        raise WriteError(path, _reason(error)) from None
    try:
        yield staging
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, WriteError):
            if error.path.is_relative_to(staging):
                raise WriteError(path / error.path.relative_to(staging), error.reason) from None
            raise
        if isinstance(error, OSError):
            raise WriteError(path, _reason(error)) from None
        raise
    retired = None
    try:
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, retired / path.name)
        os.replace(staging, path)
    except OSError as error:
        if retired is not None and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(retired / path.name, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(path, _reason(error)) from None
    finally:
        if retired is not None and path.exists():
            shutil.rmtree(retired, ignore_errors=True)
