"""Where the nvidia-pytriton wheel keeps the Triton binary, its backends and its shared libraries.

The wheel is a Triton 2.51 build with the Python backend and the ensemble scheduler, and no onnxruntime or
TensorRT backend; PyTriton itself drives it the same way (pytriton/triton.py,
pytriton/server/triton_server.py).
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from importlib.util import find_spec
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not installed: pip install 'beit-triton[serve]'")
    return Path(spec.origin).parent


def tritonserver_root() -> Path:
    return _package_dir("pytriton") / "tritonserver"


def tritonserver_binary() -> Path:
    return tritonserver_root() / "bin" / "tritonserver"


def prepare_backend_directory(directory: Path) -> Path:
    """Lay out a backend directory whose Python backend runs this interpreter's version.

    The wheel ships one stub per Python version; the backend looks for it beside libtriton_python.so.
    """
    stub = tritonserver_root() / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_binary = stub / "triton_python_backend_stub"
    if not stub_binary.is_file():
        raise RuntimeError(
            f"nvidia-pytriton ships no Python backend stub for Python {sys.version.split()[0]}"
        )
    python_backend = directory / "python"
    shutil.copytree(tritonserver_root() / "backends" / "python", python_backend, dirs_exist_ok=True)
    shutil.copy2(stub_binary, python_backend / "triton_python_backend_stub")
    return directory


def library_path() -> str:
    """The wheel's bundled libraries, then this interpreter's libpython.

    Without LIBDIR first the stub may load the system's libpython of another patch version.
    """
    libs = _package_dir("pytriton").parent / "nvidia_pytriton.libs"
    return ":".join(str(p) for p in (libs, sysconfig.get_config_var("LIBDIR")) if p)


def interpreter_bin_dir() -> str:
    """The stub takes sys.prefix (so its site-packages) from the first python3 on PATH: this venv's."""
    return str(Path(sys.executable).parent)
