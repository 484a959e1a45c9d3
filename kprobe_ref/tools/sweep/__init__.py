"""Exhaustive encoding sweeps: every instruction word's verdict checked against SLEIGH.

The modules, in reading order: :mod:`.plan` (word spaces and shards), :mod:`.ours` (our
verdict for a range of words), :mod:`.sleigh` (Ghidra's view through pypcode),
:mod:`.third` (capstone's opinion on validity), :mod:`.patterns` (sets of words as
mask/value cubes), :mod:`.shard` (one shard's record), :mod:`.store` (checkpoints),
:mod:`.engine` (Dask), :mod:`.known` (understood disagreements), :mod:`.report` (merging),
:mod:`.commands` (the CLI), :mod:`.vendor` (decode rows against vendor encoding tables).
"""
