"""docs/adr/README.md is the index of decisions and contracts: it cannot drift from the files
and the tests it points to."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = (ROOT / "docs" / "adr" / "README.md").read_text()


def test_every_adr_file_is_in_the_index_and_every_entry_is_a_file():
    files = {p.name[:4] for p in (ROOT / "docs" / "adr").glob("[0-9][0-9][0-9][0-9]-*.md")}
    listed = set(re.findall(r"^- (\d{4}) ", INDEX, re.M))
    assert files == listed


def test_every_contract_has_a_row_and_tests_named_after_it():
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for n in range(1, 12):
        assert re.search(rf"^\| C{n} ", INDEX, re.M), f"C{n} has no row in docs/adr/README.md"
        assert re.search(rf"def test_c{n}_", tests), f"C{n} has no test named test_c{n}_..."
