"""The default queue backend: the SQLite job table plus supervised render processes on this box."""
