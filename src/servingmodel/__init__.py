"""servingmodel: a first-principles model of LLM serving throughput curves.

The package has six layers, lowest first: facts (specs, measurements,
checks, paths), physics terms (roofline, kvcache, queueing, prefill, comm,
host, routing), model composition (setup, layout, crude, fullmodel, disagg,
stepsim), fitting (evaluate, calibrate, ladder), studies (diagnosis,
replaystudy, answers, whatif) and presentation (style, tables, figures, cli).
A module imports only from its own layer and those below (import-linter's
contract in pyproject.toml). Each physics module is one refinement of the
model, introduced by one chapter of the book in ``book/``.
"""

__version__ = "0.1.0"  # the package version, in one place (pyproject.toml reads it)
