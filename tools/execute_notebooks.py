#!/usr/bin/env python3
"""Re-execute chapters in place, top to bottom, in a fresh kernel.

Usage (via the venv, as `make execute` does):
    .venv/bin/python tools/execute_notebooks.py [NOTEBOOK ...]

Without arguments it runs every chapter, ``book/[0-9][0-9]_*.ipynb``.

The kernel is the interpreter running this script (like nbval's
``--nbval-current-env``), whatever kernelspec the notebook names, and its
working directory is the notebook's folder, as under nbval and jupyter-book.
A cell that raises stops the run and leaves the notebook file untouched,
unless the cell is tagged ``raises-exception``.

`make execute` runs tools/normalize_notebooks.py afterwards; run it yourself
if you call this script directly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normalize_notebooks import default_notebooks  # noqa: E402


class CurrentEnvKernelSpecManager(KernelSpecManager):
    """Resolve every kernel name to an ipykernel on this interpreter."""

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(
            resource_dir=ipykernel.kernelspec.RESOURCES,
            **ipykernel.kernelspec.get_kernel_dict(),
        )


class CurrentEnvKernelManager(AsyncKernelManager):
    """A kernel on this interpreter, talking over local (ipc) sockets.

    TCP would make ipykernel warn about unencrypted traffic; the ipc socket
    paths are absolute so that the kernel, whose cwd is the notebook's folder,
    and this client agree on them.
    """

    socket_dir = tempfile.gettempdir()  # set per run by execute()

    def __init__(self, **kwargs):
        kwargs["kernel_spec_manager"] = CurrentEnvKernelSpecManager()
        kwargs["transport"] = "ipc"
        kwargs["ip"] = str(Path(self.socket_dir) / "kernel")
        super().__init__(**kwargs)


def execute(path: Path, timeout: int) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        kernel_manager_class=CurrentEnvKernelManager,
        timeout=timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    with tempfile.TemporaryDirectory(prefix="nbexec-") as socket_dir:
        CurrentEnvKernelManager.socket_dir = socket_dir
        client.execute()
    # Cells nbclient skips (empty source) keep stale fields otherwise.
    for cell in nb.cells:
        if cell.cell_type == "code" and not cell.source.strip():
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: book/[0-9][0-9]_*.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    args = parser.parse_args(argv)

    paths = args.notebooks or default_notebooks()
    if not paths:
        print("no chapters found (book/[0-9][0-9]_*.ipynb)", file=sys.stderr)
        return 1
    for path in paths:
        start = time.perf_counter()
        print(f"executing {path} ...", flush=True)
        execute(path, args.timeout)
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
