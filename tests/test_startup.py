"""`memstore --help` and `import memstore` load none of the heavy libraries (issue 15).

lancedb alone takes about two seconds to import; help text needs none of it. Each check runs in a
fresh interpreter, since this test process has imported everything long ago. Wall-clock times are
not asserted (a loaded machine makes them flaky): benchmarks/bench_startup.py measures them.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import memstore

# `python -c` puts its working directory first on sys.path: run there the memstore under test
ROOT = Path(memstore.__file__).resolve().parent.parent

HEAVY = ("lancedb", "lance", "duckdb", "torch", "pyarrow", "numpy", "sklearn")

REPORT = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running code."""
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{REPORT}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_import_memstore_loads_no_heavy_library():
    assert heavy_modules_after("import memstore") == []


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["sql", "--help"]])
def test_help_loads_no_heavy_library(args):
    code = f"from memstore.cli import main\nmain({args!r}, prog_name='memstore', standalone_mode=False)"
    assert heavy_modules_after(code) == []


def test_every_command_help_loads_no_heavy_library():
    code = ("from memstore.cli import main\n"
            "for name in sorted(main.commands):\n"
            "    main([name, '--help'], prog_name='memstore', standalone_mode=False)")
    assert heavy_modules_after(code) == []


def test_the_lazy_names_still_resolve_and_are_listed():
    assert memstore.open is memstore.memory.open and memstore.Memory.__name__ == "Memory"
    assert memstore.WriteResult.__name__ == "WriteResult"
    assert {"open", "Memory", "WriteResult", "KNNClassifier"} <= set(dir(memstore))
    assert all(hasattr(memstore, name) for name in memstore.__all__)


def test_a_submodule_named_after_import_memstore_alone_is_imported():
    # `import memstore; memstore.versioning.LOCK_TIMEOUT = ...` (tests/test_concurrency.py) worked
    # while import memstore loaded the whole package
    code = "import memstore\nassert memstore.versioning.LOCK_TIMEOUT > 0 and memstore.sql.SQLLimits().timeout"
    assert "lancedb" in heavy_modules_after(code)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        memstore.nope

