"""The append-only delivery ledger: event encoding, RFC 9162 Merkle math, roots, proofs
and signed checkpoints."""
