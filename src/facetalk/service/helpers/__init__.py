"""One helper-process class (``process``) and the helpers it runs: upload validation, page analysis."""
