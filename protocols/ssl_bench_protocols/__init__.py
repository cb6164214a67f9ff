"""ssl-bench's built-in downstream protocols: one module each, registered through the ``ssl_bench`` entry points."""
