"""Repo-wide pytest configuration (options live in pyproject.toml).

nbval (enabled by ``--nbval`` in addopts) collects every ``.ipynb`` under the
test paths. Only chapters, ``book/NN_slug.ipynb``, are part of the book and
have committed outputs; ``book/_template.ipynb`` and scratch notebooks are
left out here rather than by a glob in each command.
"""

import re

CHAPTER_RE = re.compile(r"^\d\d_.+\.ipynb$")


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".ipynb" and not CHAPTER_RE.match(collection_path.name):
        return True
    return None
