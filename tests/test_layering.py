"""The runtime package stands alone: nothing in vaegan_dist imports the sharding tool
(data_prep) or the launchers (launch), and no module imports an optional extra (ffcv,
deepspeed, scikit-learn) when it is imported, only when a feature that needs it is used."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from tests import procs

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vaegan_dist"


def _imported(path: Path) -> set[str]:
    """Top-level names of every module that `path` imports (anywhere in the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_of_the_tools_in_the_runtime_package():
    """Parsed in a fresh interpreter: CPython 3.11 keeps the AST constructor's recursion
    depth in state that threads share (python/cpython#106905), and in a pytest worker that
    earlier tests left threads in, ast.parse failed now and then with a spurious
    "SystemError: AST constructor recursion depth mismatch"."""
    code = ("import json; from tests.test_layering import "
            "PKG, ROOT, _imported; print(json.dumps({str(p.relative_to(ROOT)): "
            "sorted(_imported(p) & {'data_prep', 'launch'}) for p in PKG.rglob('*.py')}))")
    r = procs.run([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert r.returncode == 0, procs.tail(r.stdout, r.stderr)
    bad = json.loads(r.stdout)
    assert len(bad) > 20 and "vaegan_dist/train.py" in bad  # it did read the package
    assert not {k: v for k, v in bad.items() if v}, bad


def test_every_module_imports_without_the_tools_and_the_extras():
    """In a fresh interpreter where data_prep and launch cannot be imported: every vaegan_dist
    module imports, the WebDataset decoder decodes, and no extra got imported on the way."""
    code = r"""
import importlib, pkgutil, sys
for blocked in ("data_prep", "launch"):
    sys.modules[blocked] = None  # any import of it raises ImportError
import numpy as np
import vaegan_dist
for m in pkgutil.walk_packages(vaegan_dist.__path__, "vaegan_dist."):
    importlib.import_module(m.name)
from vaegan_dist.codec import encode
from vaegan_dist.data.wds_stream import _decode
img = np.zeros((8, 8, 3), np.uint8)
assert _decode({"png": encode(img, "png"), "__key__": "k"})[0].shape == (8, 8, 3)
loaded = sorted(n for n in ("ffcv", "deepspeed", "sklearn", "scipy") if n in sys.modules)
print("extras imported:", loaded)
assert not loaded
"""
    r = procs.run([sys.executable, "-c", code], cwd=ROOT, timeout=180)
    assert r.returncode == 0, procs.tail(r.stdout, r.stderr)
