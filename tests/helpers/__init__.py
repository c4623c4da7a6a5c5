"""Scaffolding the tests share (never fixtures: those live in conftest.py).

`accounting`: the judge behind an access policy and a counter of the rows it evaluates; `configs`: the real
Hydra config shrunk for speed, under an access policy each threat model allows; `torchvision_files`: small
files in torchvision's on-disk formats. Importable as `helpers.*` because pytest puts `tests/` (the folder of
the root conftest.py) on `sys.path`.
"""
