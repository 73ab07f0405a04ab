"""After a plain ``import memstore``, transformers' model classes import, whatever torchvision wheel.

Each case runs in a fresh interpreter: the suite's own process has long imported torchvision.
"""

import subprocess
import sys

import pytest

TRANSFORMERS_MODEL = "from transformers import GPT2Config, GPT2LMHeadModel; GPT2LMHeadModel(GPT2Config(" \
                     "vocab_size=8, n_embd=8, n_layer=1, n_head=1, bos_token_id=0, eos_token_id=0))"


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def plain_import_fails() -> bool:
    """Whether this machine has the broken pairing (a CUDA torchvision wheel on a CPU torch)."""
    done = run("import torchvision")
    if done.returncode != 0 and "torchvision::nms does not exist" not in done.stderr:
        pytest.fail(f"torchvision fails to import for another reason:\n{done.stderr[-2000:]}")
    return done.returncode != 0


def test_transformers_models_load_after_import_memstore(plain_import_fails):
    done = run(f"import memstore\n{TRANSFORMERS_MODEL}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_memstore_the_same_import_fails_here(plain_import_fails):
    """The hook is what makes the test above pass (where the pairing is broken)."""
    if not plain_import_fails:
        pytest.skip("torchvision imports cleanly on this machine; there is nothing to repair")
    done = run(TRANSFORMERS_MODEL)
    assert done.returncode != 0


def test_import_memstore_does_not_import_torch():
    done = run("import memstore, sys; print('torch' in sys.modules, 'torchvision' in sys.modules)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]


def test_other_import_errors_are_not_swallowed(tmp_path):
    """A torchvision that fails for any other reason fails exactly as it would without memstore."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('something else is broken')\n")
    done = run(f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import memstore; import torchvision")
    assert done.returncode != 0 and "something else is broken" in done.stderr
