"""Stateful detectors the operator runs inside the Oracle: each remembers the queries it has admitted and flags a
query too much like them (the Oracle then rejects it and bans the account).

base.py holds the shared history and the `DetectionDefense` contract; one module per detector:
knn_similarity.py (Chen, Carlini & Wagner, 2019), blacklight.py (Li et al., 2022), piha.py (Choi et al., 2023).
"""
