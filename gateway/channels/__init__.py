"""Transports. Each channel turns its wire protocol into calls on the core and back:

* :mod:`gateway.channels.peer`: gateway to gateway over HTTP(S);
* the client channel (officers' API) and intake adapters come with later issues.

Core logic (store, ledger, routing, metrics) imports nothing from here.
"""
