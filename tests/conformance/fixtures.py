"""Where the reference fixtures are: the project's own copy plus ``$JAXPOSE_REFERENCE_DIR``.

The project ships the public fixtures in ``tests/reference/`` (``models/`` and
``functions/``), so the conformance suite runs on any clone. ``$JAXPOSE_REFERENCE_DIR``
names ADDITIONAL fixture folders (``os.pathsep``-separated, like ``PATH``); each must
hold ``models/*.json`` and/or ``functions/*.json`` fixtures in the same format, and all
of them are checked the same way as the project's copy. Naming the project's folder
again adds nothing.

Test ids: a fixture of the project's copy is named by its file stem
(``pose_hrnet_w32_256x192``); one of the N-th extra folder is prefixed ``envN-`` so that
two folders may hold fixtures of the same name. Nothing here lists fixtures or counts
cases: everything is found on disk at collection time.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "JAXPOSE_REFERENCE_DIR"
PROJECT_DIR = Path(__file__).resolve().parents[1] / "reference"
KINDS = ("models", "functions")


@dataclasses.dataclass(frozen=True)
class FixtureDir:
  """A folder of reference fixtures.

  Attributes:
    path: the folder (absolute).
    label: ``""`` for the project's copy, ``"envN"`` for the N-th entry of
      ``$JAXPOSE_REFERENCE_DIR``.
  """

  path: Path
  label: str

  @property
  def origin(self) -> str:
    """Where this folder was named, for messages."""
    if not self.label:
      return "the project's copy"
    return f"entry {self.label[3:]} of ${ENV_VAR}"

  def id_for(self, stem: str) -> str:
    """A test id for fixture ``stem`` of this folder, unique across folders."""
    return f"{self.label}-{stem}" if self.label else stem

  def fixtures(self, kind: str) -> list[Path]:
    """The ``kind/*.json`` fixtures (``kind``: ``'models'`` or ``'functions'``), sorted."""
    return sorted((self.path / kind).glob("*.json"))

  def problem(self) -> str | None:
    """Why this folder is unusable (missing, or without the fixtures it must hold), or None.

    The project's copy must hold both model and function fixtures; an extra folder at
    least one fixture of either kind.
    """
    found = {kind: self.fixtures(kind) for kind in KINDS}
    looked = " and ".join(str(self.path / kind / "*.json") for kind in KINDS)
    if not self.path.is_dir():
      return f"reference fixture folder {self.path} ({self.origin}) does not exist"
    empty = [kind for kind in KINDS if not found[kind]]
    if (self.label and len(empty) == len(KINDS)) or (not self.label and empty):
      return (f"no reference fixtures in {self.path} ({self.origin}): looked for {looked}; "
              f"nothing found in {', '.join(k + '/' for k in empty)}")
    return None


def fixture_dirs(environ: Mapping[str, str] = os.environ) -> list[FixtureDir]:
  """The project's copy, then every distinct folder named in ``$JAXPOSE_REFERENCE_DIR``.

  Args:
    environ: the environment to read (default ``os.environ``).

  Returns:
    The folders in order; empty entries and repeats (after resolving) are dropped.
  """
  dirs = [FixtureDir(PROJECT_DIR, "")]
  seen = {PROJECT_DIR}
  entries = [e for e in environ.get(ENV_VAR, "").split(os.pathsep) if e.strip()]
  for number, entry in enumerate(entries, start=1):
    path = Path(entry).expanduser().resolve()
    if path not in seen:
      seen.add(path)
      dirs.append(FixtureDir(path, f"env{number}"))
  return dirs


@dataclasses.dataclass(frozen=True)
class NoFixtures:
  """Stands in for a fixture path when no folder holds a fixture of a kind.

  A parametrised test that receives it fails via :func:`require` with a message saying
  where fixtures were looked for, instead of pytest's "empty parameter set" skip.
  """

  message: str


def discover(kind: str, dirs: list[FixtureDir] | None = None) -> list[tuple[str, Path | NoFixtures]]:
  """``(test id, fixture json path)`` for every ``kind`` fixture of every folder.

  Args:
    kind: ``'models'`` or ``'functions'``.
    dirs: the folders (default :func:`fixture_dirs`).

  Returns:
    The fixtures in folder order; when there are none at all, a single
    ``('no-fixtures', NoFixtures(message))`` entry.
  """
  dirs = fixture_dirs() if dirs is None else dirs
  found = [(d.id_for(p.stem), p) for d in dirs for p in d.fixtures(kind)]
  if found:
    return found
  where = ", ".join(f"{d.path / kind} ({d.origin})" for d in dirs)
  return [("no-fixtures", NoFixtures(f"no {kind} fixtures (*.json) found; looked in {where}"))]


def require(path: Path | NoFixtures) -> Path:
  """``path`` itself, or an ``AssertionError`` with the message of a :class:`NoFixtures`."""
  if isinstance(path, NoFixtures):
    raise AssertionError(path.message)
  return path
