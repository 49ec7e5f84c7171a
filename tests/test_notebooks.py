"""Execute every notebook in notebooks/ headless, as CI does, on a fresh root.

Each notebook runs in a real ipykernel (this interpreter, through a kernelspec
written to a temporary JUPYTER_PATH) with ``DOCKYARD_ROOT`` pointing at an
empty temporary directory, so it builds its own busybox and touches nothing
else. A notebook passes when no cell raised, no CLI cell reported an engine
error, it finished within its time budget, and it left no container and no
mount behind.

The notebooks are stored without outputs; a second test keeps them that way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BUDGET_SECONDS = 60  # a chapter must run in CI in less than a minute

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="notebooks run real containers: needs root (namespaces, mounts)")


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A python3 kernelspec that is this interpreter, and private Jupyter/IPython dirs.

    jupyter_client would also map a plain "python" argv to sys.executable, but
    a python3 kernelspec elsewhere on JUPYTER_PATH (e.g. in ~/.local/share)
    could point at another Python without Dockyard; JUPYTER_PATH comes first.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (Dockyard tests)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silence jupyter_core's deprecation warning
    return spec_dir


def remove_all_containers(root: Path) -> list[str]:
    """Remove every container in ``root``; return the names that were there."""
    from engine import Engine

    engine = Engine(root)
    names = []
    for container in engine.containers.list(all=True):
        names.append(container.name)
        container.remove(force=True)
    return names


def shell_cell_errors(nb) -> list[str]:
    """Engine errors printed by `!... -m engine` cells (a failing `!` command does not raise)."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "-m engine" not in cell.source:
            continue
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            for line in text.splitlines():
                if line.startswith("dockyard: ") or line.startswith("Traceback"):
                    found.append(f"cell {index} ({cell.get('id')}): {line}")
    return found


@needs_root
@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, kernel_env):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    root = tmp_path / "dockyard-root"
    monkeypatch.setenv("DOCKYARD_ROOT", str(root))  # the kernel inherits os.environ

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    started = time.monotonic()
    try:
        try:
            client.execute()
        except CellExecutionError as e:
            pytest.fail(f"{path.name}: a cell failed:\n{e}", pytrace=False)
        elapsed = time.monotonic() - started
        errors = [o for cell in nb.cells if cell.cell_type == "code"
                  for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: error outputs: {errors}"
        cli_errors = shell_cell_errors(nb)
        assert not cli_errors, f"{path.name}: CLI errors: {cli_errors}"
        assert elapsed < BUDGET_SECONDS, f"{path.name} took {elapsed:.1f}s (budget {BUDGET_SECONDS}s)"
        print(f"{path.name}: executed in {elapsed:.1f}s")
    finally:
        leftovers = remove_all_containers(root) if root.exists() else []
        if (root / "networks").exists():
            from engine import Engine

            Engine(root).networks.prune()  # its user networks, and its bridges, from the host
        leaked_mounts = mounts_under(root)
    assert not leftovers, f"{path.name} left containers behind: {leftovers}"
    containers_dir = root / "containers"
    assert not containers_dir.exists() or not os.listdir(containers_dir), \
        f"{path.name} left container directories: {os.listdir(containers_dir)}"
    assert not leaked_mounts, f"{path.name} left mounts behind: {leaked_mounts}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    """Stored without outputs, nbformat 4, python3 kernel: the repository stays clean."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [cell.get("id") for cell in nb.cells if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"
