"""Supervised training for downstream protocols: the one loop (:mod:`.loop`), the two task kinds it trains
(:mod:`.segmentation`, :mod:`.classification`), the rule that picks the labelled images (:mod:`.labelled`) and the
base of protocols that train by it (:mod:`.protocol`)."""
