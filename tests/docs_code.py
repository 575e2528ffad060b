"""The python blocks of docs/extending.md as importable modules, so that the tests run the documented
code exactly as written (a plugin format, a target kind) on the driver and on the Ray workers."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "extending.md"


def doc_module(name: str, marker: str, edit=lambda code: code):
    """The python block of docs/extending.md holding ``marker``, imported as module ``name`` and
    pickled by value (it is installed nowhere the workers could import it from)."""
    import ray.cloudpickle

    code = next(block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in block)
    path = Path(__file__).parent / f"{name}.py"
    path.write_text(edit(code))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        path.unlink()
    ray.cloudpickle.register_pickle_by_value(module)
    return module


def forget_module(module) -> None:
    import ray.cloudpickle

    ray.cloudpickle.unregister_pickle_by_value(module)
    del sys.modules[module.__name__]
