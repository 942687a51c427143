"""Transports. Each channel turns its wire protocol into calls on the core and back:

* :mod:`gateway.channels.peer`: the public routes partners read (descriptor, ledger);
* :mod:`gateway.channels.federation`: signed hop requests from partners (relay batches,
  the desk directory);
* :mod:`gateway.channels.client`: the officers' API;
* :mod:`gateway.channels.errors`: the error middleware every channel's application uses.

Core logic (store, ledger, routing, metrics) imports nothing from here, and channels
import neither gateway.app nor gateway.cli (tests/test_imports.py).
"""
