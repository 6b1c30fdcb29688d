"""``python -m facetalk.cli``: the same as the ``facetalk`` command."""

from . import main

main()
