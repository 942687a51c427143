"""Every use of PyNaCl in the gateway lives in this package, and nowhere else; it imports
nothing else of the gateway (tests/test_imports.py).

* :mod:`gateway.crypto.keys`: key types per role, key ids and fingerprints;
* :mod:`gateway.crypto.keyfile`: private keys at rest, encrypted with a passphrase;
* :mod:`gateway.crypto.envelope`: sealing, verifying and opening envelopes (format v1);
* :mod:`gateway.crypto.errors`: its own error family, re-exported by gateway.errors.
"""
