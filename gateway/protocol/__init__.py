"""Wire texts and formats that the gateway and the officers' client share: names, JSON
rules and the exact strings that are signed. Imports only the base and crypto/."""
