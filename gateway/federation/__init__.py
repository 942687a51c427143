"""Gateway to gateway: pinned partners (following their descriptors and key rotations,
whose formats live in gateway.protocol), rosters, signed hop requests, the relay sender
and receiver, receipts and witnessing of partners' ledgers."""
