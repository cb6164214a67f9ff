"""The board: leaderboards and the report, built from the result records alone.

:class:`Board` loads a results folder once (:mod:`.load`); :mod:`.tables` reduces the records to one row per seed
and per cell, :mod:`.claims` compares cells over training seeds, :mod:`.findings` and :mod:`.sections` lay the
tables out, and :mod:`.markdown`, :mod:`.html` and :mod:`.plots` render them; :mod:`.publish` writes the files.
"""

from ssl_bench.board.load import Board
from ssl_bench.board.publish import write_boards, write_leaderboard, write_report

__all__ = ["Board", "write_boards", "write_leaderboard", "write_report"]
