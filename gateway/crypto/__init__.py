"""Every use of PyNaCl in the gateway lives in this package, and nowhere else.

* :mod:`gateway.crypto.keys`: key types per role, key ids and fingerprints;
* :mod:`gateway.crypto.keyfile`: private keys at rest, encrypted with a passphrase;
* :mod:`gateway.crypto.envelope`: sealing, verifying and opening envelopes (format v1).
"""
