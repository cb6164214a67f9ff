"""Method plugins that ship with ssl-bench: one module per method."""
