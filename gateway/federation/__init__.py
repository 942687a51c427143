"""Gateway to gateway: pinned partners and their descriptors, rosters and key rotation,
signed hop requests, the relay sender and receiver, receipts, non-delivery notices and
witnessing of partners' ledgers."""
