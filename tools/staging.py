"""What the harness puts in front of a kernel, and how it checks it afterwards.

- `stage_code` copies a run's code (a checkout, without `.git`, `.agentx` and caches) into
  the kernel's work folder. Confined kernels see that folder read-only, so files may be
  hard links to the checkout's (instant, no copy); an unconfined kernel gets real copies,
  so it cannot change the checkout through them.
- `protected_digest` names every protected file by its git blob sha (`git hash-object`),
  so a checkout's files compare directly with a commit's blobs (`WorkspaceRepo.blobs`).
- `entrypoint_file` finds the entrypoint's module before a kernel is spent on it.
- `is_disk_full` tells a full disk (or quota, or a file-size limit) from other OS errors.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

SKIP = shutil.ignore_patterns(".git", ".agentx", "__pycache__", "*.pyc", ".ipynb_checkpoints")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def stage_code(checkout: Path, dest: Path, *, link: bool) -> None:
    """Copy the code in `checkout` into the (empty) folder `dest`; hard links when `link`."""
    def hardlink(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:                 # another file system, or links not allowed: copy
            shutil.copy2(src, dst)

    shutil.copytree(checkout, dest, ignore=SKIP, symlinks=True, dirs_exist_ok=True,
                    copy_function=hardlink if link else shutil.copy2)


def git_blob_sha(data: bytes) -> str:
    """The sha git gives a file with these bytes (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def protected_digest(root: Path, rules: list[str]) -> dict[str, str]:
    """path -> git blob sha of every file under the protected rules ('absent' for a rule
    that names nothing)."""
    digest = {}
    for rule in rules:
        target = root / rule
        files = sorted(p for p in target.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if target.is_dir() else [target]
        for path in files:
            rel = path.relative_to(root).as_posix()
            digest[rel] = git_blob_sha(path.read_bytes()) if path.is_file() else "absent"
    return digest


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k, "absent") != after.get(k, "absent"))


def entrypoint_file(root: Path, module: str) -> Path | None:
    """The file that `import module` finds under `root` (a module or a package), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL
