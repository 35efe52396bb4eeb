"""servingmodel: a first-principles model of LLM serving throughput curves.

Each module holds one refinement of the model and is introduced by one chapter
of the book in ``book/``.
"""

__version__ = "0.1.0"
