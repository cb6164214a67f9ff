"""Task plugins that ship with ssl-bench: one module per dataset family."""
