"""Wire texts and formats that the gateway and the officers' client share: names, JSON
rules and the exact strings that are signed. Imports only the base and crypto/
(tests/test_imports.py), so the client can use them without loading the server.

* :mod:`gateway.protocol.names`, :mod:`gateway.protocol.jsontext`: names, strict JSON;
* :mod:`gateway.protocol.officers`: what officers' clients sign (enrollment, sessions,
  read acknowledgements) and the bindings and directories they open;
* :mod:`gateway.protocol.descriptor`: the gateway descriptor;
* :mod:`gateway.protocol.rotation`: key rotation statements and key histories;
* :mod:`gateway.protocol.notices`: non-delivery notices.
"""
