"""Method plugins that ship with ssl-bench: one module per method.

A method module imports no other method module: what several share lives in the underscore-prefixed modules.
"""
