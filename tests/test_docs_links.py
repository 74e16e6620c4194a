"""Every relative link and image in README.md and docs/*.md points at a file of the repository.

Generated results pages come and go (a page superseded by a larger one is deleted); a link left behind to one of
them, or to a plot of its folder, should fail here rather than on a reader's screen.
"""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# [text](target) and ![alt](target); the target ends at whitespace or ')' (an optional "title" may follow).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = ("http://", "https://", "mailto:", "gs://", "#")


def markdown_files():
  return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                              recursive=True))


def broken_links(path: str) -> list[str]:
  """'file:line: target' for each relative link in `path` whose file does not exist."""
  broken = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      for target in LINK.findall(line):
        if target.startswith(EXTERNAL):
          continue
        local = target.split("#", 1)[0]
        if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), local))):
          broken.append(f"{os.path.relpath(path, ROOT)}:{lineno}: {target}")
  return broken


def test_finds_the_markdown_files():
  files = markdown_files()
  assert os.path.join(ROOT, "README.md") in files
  assert any(f.endswith(os.path.join("docs", "methods.md")) for f in files)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
  assert broken_links(path) == []


def test_a_missing_target_is_reported_with_file_and_line(tmp_path):
  page = tmp_path / "page.md"
  (tmp_path / "there.png").write_bytes(b"")
  page.write_text("fine ![plot](there.png) and [web](https://example.org)\n"
                  "[gone](results_gone.md#table) here\n", encoding="utf-8")
  [message] = broken_links(str(page))
  assert message.endswith("page.md:2: results_gone.md#table")
