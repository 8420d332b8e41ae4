"""The ``dataplane`` command line: one file per subcommand, one option table."""
