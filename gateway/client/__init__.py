"""The officers' thin client: payload formats (payload.py) and the API library (api.py).

Everything that needs an officer's private keys runs here, on the officer's machine.
"""
