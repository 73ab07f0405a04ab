"""The deliberate-bug script stays usable: every mutant's patch still applies to the code it names.

``make mutants`` is too slow for ``make test``, so a refactor could leave a mutant whose piece of
source is gone, and the protection it checks would go unchecked until someone ran the script.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from mutants import MUTANTS  # noqa: E402


def test_every_mutant_patch_applies_exactly_once():
    stale = {m.name: (ROOT / m.file).read_text().count(m.old) for m in MUTANTS
             if (ROOT / m.file).read_text().count(m.old) != 1}
    assert stale == {}, f"mutants whose source moved (name: matches); update them in benchmarks/mutants.py: {stale}"


def test_mutant_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
