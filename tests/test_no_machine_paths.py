"""No path of a development machine in the project: the folder the checkout lives in (the parent of the repository
root, found at test time: on the development machines every checkout, data copy and tool lives under it) must not
appear in src/, scripts/, tests/ or benchmarks/*.py. Data is named (``cifar10``) or found relative to the checkout
(``../shared/data``)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".txt", ".sh", ".yaml", ".yml", ".toml", ".json", ".cfg", ".ini", ".csv"}


def _files() -> list[Path]:
    out = [p for d in ("src", "scripts", "tests") for p in (ROOT / d).rglob("*")
           if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return out + sorted((ROOT / "benchmarks").glob("*.py"))


def _pattern(parent: Path) -> re.Pattern:
    # the folder as a whole path component: not inside a longer name, not a tail of another path or URL
    return re.compile(r"(?<![\w.~/-])" + re.escape(str(parent)) + r"(?![\w.-])")


def test_the_pattern_finds_the_folder_and_only_it():
    pat = _pattern(Path("/dev/box"))
    assert pat.search('DATA = "/dev/box/shared/data"') and pat.search("cd /dev/box && ls")
    assert not pat.search("/dev/boxes/x") and not pat.search("https://h.org/dev/box/x") and not pat.search("../x")


def test_no_absolute_path_of_the_development_machine():
    parent = ROOT.parent
    if parent == Path(parent.anchor):  # a checkout at the file-system root: no folder to look for
        return
    pat = _pattern(parent)
    hits = []
    for p in _files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if pat.search(line):
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not hits, f"absolute paths under {parent} (name data sets, or find files relative to the checkout):\n" + \
        "\n".join(hits)
