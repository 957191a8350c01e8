"""Redwood's protocol, pure: types, canonical encoding, signatures, Merkle trees, the PBFT replica.

Nothing in this package performs I/O, reads a clock or draws randomness;
`tests/unit/test_purity.py` enforces it.
"""
