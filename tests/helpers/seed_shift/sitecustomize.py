"""On PYTHONPATH only under GAVEL_TEST_SEED (tests/conftest.py puts it there): a Python process a test starts
shifts its training seeds like the test process (`seed_shift.shift_training_seeds`), once
`gavel.targets.training` is imported, so processes that never import it (a `python -c` helper) load no torch."""

import importlib.abc
import os
import sys

TRAINING = "gavel.targets.training"


class _ShiftOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TRAINING:
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec

            spec = find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_shift(module):
            exec_module(module)
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from seed_shift import shift_training_seeds

            shift_training_seeds(module)

        loader.exec_module = exec_and_shift
        return spec


if os.environ.get("GAVEL_TEST_SEED", "").strip() not in ("", "0"):
    sys.meta_path.insert(0, _ShiftOnImport())
