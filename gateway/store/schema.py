"""The SQLite schema, as numbered migrations applied in order at open.

Never edit a migration that has shipped: add the next one. Each runs in its own
transaction and is recorded in ``schema_version``.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE messages (
            mseq        INTEGER PRIMARY KEY,
            id          TEXT NOT NULL UNIQUE,
            digest      TEXT NOT NULL,
            envelope    BLOB NOT NULL,
            kind        TEXT NOT NULL,
            priority    TEXT NOT NULL,
            sender      TEXT NOT NULL,
            recipient   TEXT NOT NULL,
            thread      TEXT NOT NULL,
            in_reply_to TEXT,
            created_ms  INTEGER NOT NULL,
            expires_ms  INTEGER NOT NULL,
            accepted_ms INTEGER NOT NULL,
            origin      TEXT NOT NULL,
            actor       TEXT NOT NULL
        );

        CREATE TABLE inbox (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            desk         TEXT NOT NULL,
            message_id   TEXT NOT NULL REFERENCES messages(id),
            delivered_ms INTEGER NOT NULL,
            UNIQUE (desk, message_id)
        );
        CREATE INDEX inbox_by_desk ON inbox (desk, seq);

        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            partner    TEXT NOT NULL,
            rank       INTEGER NOT NULL,
            message_id TEXT NOT NULL REFERENCES messages(id),
            queued_ms  INTEGER NOT NULL,
            UNIQUE (partner, message_id)
        );
        CREATE INDEX outbox_order ON outbox (partner, rank, seq);

        CREATE TABLE ledger (
            seq       INTEGER PRIMARY KEY,
            msg       INTEGER,
            entry     BLOB NOT NULL,
            leaf_hash BLOB NOT NULL,
            nodes     BLOB NOT NULL
        );
        CREATE INDEX ledger_by_message ON ledger (msg) WHERE msg IS NOT NULL;
        CREATE TABLE checkpoints (
            size    INTEGER PRIMARY KEY,
            root    BLOB NOT NULL,
            note    BLOB NOT NULL,
            made_ms INTEGER NOT NULL
        );

        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
            BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
        CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        """,
    ),
    (
        2,
        """
        CREATE TABLE desks (
            name       TEXT PRIMARY KEY,
            supervisor TEXT REFERENCES desks(name),
            created_ms INTEGER NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE officers (
            id           TEXT PRIMARY KEY,
            sign_key     BLOB NOT NULL,
            sign_key_id  TEXT NOT NULL UNIQUE,
            enc_key      BLOB NOT NULL,
            enc_key_id   TEXT NOT NULL UNIQUE,
            binding      BLOB NOT NULL,
            enrolled_ms  INTEGER NOT NULL,
            not_after_ms INTEGER NOT NULL,
            revoked_ms   INTEGER
        ) WITHOUT ROWID;

        CREATE TABLE officer_desks (
            officer_id TEXT NOT NULL REFERENCES officers(id),
            desk       TEXT NOT NULL REFERENCES desks(name),
            PRIMARY KEY (officer_id, desk)
        ) WITHOUT ROWID;

        CREATE TABLE enrollment_codes (
            code_hash  BLOB PRIMARY KEY,
            desks      TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            expires_ms INTEGER NOT NULL,
            used_ms    INTEGER,
            officer_id TEXT
        ) WITHOUT ROWID;

        CREATE TABLE reads (
            message_id TEXT NOT NULL REFERENCES messages(id),
            officer_id TEXT NOT NULL,
            read_ms    INTEGER NOT NULL,
            ack        BLOB NOT NULL,
            PRIMARY KEY (message_id, officer_id)
        ) WITHOUT ROWID;

        ALTER TABLE messages ADD COLUMN first_read_ms INTEGER;
        ALTER TABLE messages ADD COLUMN first_reply_ms INTEGER;
        CREATE INDEX messages_by_thread ON messages (thread);
        """,
    ),
    (
        3,
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO meta (key, value) VALUES ('directory_version', 0);
        """,
    ),
    (
        4,
        """
        -- Signed receipts from partners for relayed messages, kept as evidence.
        CREATE TABLE receipts (
            message_id  TEXT NOT NULL REFERENCES messages(id),
            partner     TEXT NOT NULL,
            outcome     TEXT NOT NULL,
            reason      TEXT,
            receipt     BLOB NOT NULL,
            received_ms INTEGER NOT NULL,
            PRIMARY KEY (message_id, partner)
        ) WITHOUT ROWID;

        -- Each partner's relay retry state, so that a restart keeps the backoff.
        CREATE TABLE partner_state (
            partner         TEXT PRIMARY KEY,
            failures        INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL DEFAULT 0,
            last_contact_ms INTEGER,
            last_error      TEXT
        ) WITHOUT ROWID;
        """,
    ),
    (
        5,
        """
        -- Read acknowledgements of messages that came from partners, waiting to travel
        -- back to the sender's gateway (the ack and the reading officer's binding).
        CREATE TABLE read_outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            partner    TEXT NOT NULL,
            message_id TEXT NOT NULL REFERENCES messages(id),
            officer_id TEXT NOT NULL,
            read_ms    INTEGER NOT NULL,
            ack        BLOB NOT NULL,
            binding    BLOB NOT NULL,
            UNIQUE (partner, message_id, officer_id)
        );
        CREATE INDEX read_outbox_order ON read_outbox (partner, seq);

        -- When each queued message expires, so that the sender finds expired ones fast.
        ALTER TABLE outbox ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;
        UPDATE outbox SET expires_ms =
            (SELECT m.expires_ms FROM messages m WHERE m.id = outbox.message_id);
        CREATE INDEX outbox_expiry ON outbox (partner, expires_ms);

        -- Signed non-delivery notices for messages that expired before delivery.
        CREATE TABLE notices (
            message_id TEXT PRIMARY KEY REFERENCES messages(id),
            desk       TEXT NOT NULL,
            reason     TEXT NOT NULL,
            notice     BLOB NOT NULL,
            made_ms    INTEGER NOT NULL
        ) WITHOUT ROWID;

        -- The newest ledger checkpoint seen from each partner, checked for consistency
        -- with the one before it (witnessing).
        CREATE TABLE partner_checkpoints (
            partner TEXT PRIMARY KEY,
            size    INTEGER NOT NULL,
            root    BLOB NOT NULL,
            note    BLOB NOT NULL,
            seen_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        6,
        """
        -- Partner key rotations this gateway has verified and followed
        -- (gateway.protocol.rotation):
        -- each partner's key history as its descriptor served it, oldest statement first,
        -- so that a restart keeps trusting the partner's current key.
        CREATE TABLE partner_keys (
            partner    TEXT NOT NULL,
            seq        INTEGER NOT NULL,
            statement  BLOB NOT NULL,
            learned_ms INTEGER NOT NULL,
            PRIMARY KEY (partner, seq)
        ) WITHOUT ROWID;
        """,
    ),
    (
        7,
        """
        -- Service-level breaches found (gateway.service_levels.levels): one row per message and
        -- stage, so that a breach is counted and told once, across restarts. ``notice``
        -- is the gateway-signed breach notice sent to the supervisor desk, if any.
        CREATE TABLE breaches (
            message_id TEXT NOT NULL REFERENCES messages(id),
            stage      TEXT NOT NULL,
            desk       TEXT NOT NULL,
            priority   TEXT NOT NULL,
            due_ms     INTEGER NOT NULL,
            found_ms   INTEGER NOT NULL,
            supervisor TEXT,
            notice     BLOB,
            PRIMARY KEY (message_id, stage)
        ) WITHOUT ROWID;
        -- What the service-level check scans: messages still unread or unanswered.
        CREATE INDEX messages_unread ON messages (priority, accepted_ms)
            WHERE first_read_ms IS NULL;
        CREATE INDEX messages_unanswered ON messages (priority, accepted_ms)
            WHERE first_reply_ms IS NULL;
        """,
    ),
    (
        8,
        """
        -- Each partner's last verified desk directory (a note it signed) and the key that
        -- signed it, so that after a restart this gateway can still seal for and queue to
        -- a partner that is down (gateway.federation.partners).
        CREATE TABLE partner_directories (
            partner     TEXT PRIMARY KEY,
            note        BLOB NOT NULL,
            signing_key BLOB NOT NULL,
            fetched_ms  INTEGER NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        9,
        """
        -- No query looks messages up by thread. The index cost every accept one more
        -- write at a random place in a B-tree (a page of the write-ahead log per
        -- message in small commits) and bought nothing.
        DROP INDEX IF EXISTS messages_by_thread;
        """,
    ),
    (
        10,
        """
        -- Admission to a desk (docs/PROTOCOL.md 7.6): an officer is a member of a desk its
        -- binding names only with a signed admission, by a member of the desk or of its
        -- supervisor desk, or by the operator (the gateway's key) while the desk had none.
        -- Officers enrolled before this table existed are pending until admitted.
        CREATE TABLE admissions (
            officer_id  TEXT NOT NULL REFERENCES officers(id),
            desk        TEXT NOT NULL REFERENCES desks(name),
            admitted_by TEXT NOT NULL,
            admitted_ms INTEGER NOT NULL,
            signature   BLOB NOT NULL,
            PRIMARY KEY (officer_id, desk)
        ) WITHOUT ROWID;
        CREATE TRIGGER admissions_no_update BEFORE UPDATE ON admissions
            BEGIN SELECT RAISE(ABORT, 'admissions are append-only'); END;
        CREATE TRIGGER admissions_no_delete BEFORE DELETE ON admissions
            BEGIN SELECT RAISE(ABORT, 'admissions are append-only'); END;

        -- What each desk's members are told about its membership: an officer waits to
        -- join, joined (admitted by whom), or left (revoked); written in the transaction
        -- of the change, whichever process made it.
        CREATE TABLE desk_notices (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            desk        TEXT NOT NULL,
            kind        TEXT NOT NULL,
            officer_id  TEXT NOT NULL,
            by          TEXT,
            at_ms       INTEGER NOT NULL
        );
        CREATE INDEX desk_notices_by_desk ON desk_notices (desk, seq);

        -- History shares: an earlier message's content key wrapped for an officer who
        -- joined its desk later, signed by the member who shared it (the gateway cannot
        -- open a wrap).
        CREATE TABLE history_shares (
            message_id  TEXT NOT NULL REFERENCES messages(id),
            officer_id  TEXT NOT NULL REFERENCES officers(id),
            wrap        BLOB NOT NULL,
            shared_by   TEXT NOT NULL,
            shared_ms   INTEGER NOT NULL,
            signature   BLOB NOT NULL,
            PRIMARY KEY (officer_id, message_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        11,
        """
        -- A join's or departure's ledger entry (docs/PROTOCOL.md 7.8), once the gateway
        -- appended it: NULL until then, and always for a pending join.
        ALTER TABLE desk_notices ADD COLUMN ledger_seq INTEGER;
        CREATE INDEX desk_notices_unledgered ON desk_notices (seq)
            WHERE ledger_seq IS NULL AND kind IN ('joined', 'left');

        -- A partner's descriptor as it signed it, and its desks' membership proofs as it
        -- last answered them: officers' clients check both themselves, also while the
        -- partner is down and after this gateway restarted.
        ALTER TABLE partner_directories ADD COLUMN descriptor BLOB;
        CREATE TABLE partner_proofs (
            partner     TEXT NOT NULL,
            desk        TEXT NOT NULL,
            answer      BLOB NOT NULL,
            fetched_ms  INTEGER NOT NULL,
            PRIMARY KEY (partner, desk)
        ) WITHOUT ROWID;
        """,
    ),
    (
        12,
        """
        -- Every notice a desk is told of, stored for the desk it is addressed to in the
        -- transaction of what caused it, so that an officer who was not watching finds
        -- it later (inbox, GET by cursor, a stream opened with ``since``): membership
        -- (pending, joined, left), as before, and now service-level breaches and
        -- escalations, and non-delivery notices (expired, rejected). The table is
        -- rebuilt because a notice that is not about membership names no officer.
        -- ``message_id``: the message a breach or non-delivery notice is about;
        -- ``detail``: JSON, what the stream event carries; ``note``: the gateway-signed
        -- notice (escalation, expired, rejected), kept as signed.
        CREATE TABLE desk_notices_12 (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            desk        TEXT NOT NULL,
            kind        TEXT NOT NULL,
            officer_id  TEXT,
            by          TEXT,
            at_ms       INTEGER NOT NULL,
            ledger_seq  INTEGER,
            message_id  TEXT,
            detail      TEXT,
            note        BLOB
        );
        INSERT INTO desk_notices_12 (seq, desk, kind, officer_id, by, at_ms, ledger_seq)
            SELECT seq, desk, kind, officer_id, by, at_ms, ledger_seq FROM desk_notices;
        DROP TABLE desk_notices;
        ALTER TABLE desk_notices_12 RENAME TO desk_notices;
        CREATE INDEX desk_notices_by_desk ON desk_notices (desk, seq);
        CREATE INDEX desk_notices_unledgered ON desk_notices (seq)
            WHERE ledger_seq IS NULL AND kind IN ('joined', 'left');

        -- Which officer has read which notice: unread ones are counted per officer.
        CREATE TABLE notice_reads (
            officer_id  TEXT NOT NULL,
            notice      INTEGER NOT NULL,
            read_ms     INTEGER NOT NULL,
            PRIMARY KEY (officer_id, notice)
        ) WITHOUT ROWID;
        -- Membership notices stored before this version were shown by the clients
        -- already (they kept their own cursor): none of them counts as unread.
        INSERT INTO meta (key, value)
            SELECT 'notices_unread_after', coalesce(max(seq), 0) FROM desk_notices;
        """,
    ),
    (
        13,
        """
        -- Requests (case threads) and where they stand: the state the last status
        -- message moved each to and its due day, from the signed headers (no other
        -- case field ever reaches a gateway). ``partner``: the other side's gateway,
        -- NULL when both desks are here. ``due_ms``: the first instant it is overdue
        -- (the start of the day after ``due``, UTC). ``reminded_ms`` and
        -- ``escalated_ms``: when this gateway told its desk that the due day nears and
        -- that it passed, each once (a resubmission with a new due day clears both).
        -- ``ignored_moves``: status messages from the partner that the lifecycle did
        -- not allow from the state recorded here (two sides moving at once), kept and
        -- delivered but not applied.
        CREATE TABLE cases (
            thread         TEXT PRIMARY KEY REFERENCES messages(id),
            requester      TEXT NOT NULL,
            executor       TEXT NOT NULL,
            partner        TEXT,
            opened_ms      INTEGER NOT NULL,
            due            TEXT,
            due_ms         INTEGER,
            state          TEXT NOT NULL,
            state_ms       INTEGER NOT NULL,
            last_move      TEXT,
            reminded_ms    INTEGER,
            escalated_ms   INTEGER,
            ignored_moves  INTEGER NOT NULL DEFAULT 0,
            closed         INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE INDEX cases_open_by_due ON cases (due_ms) WHERE closed = 0;
        CREATE INDEX cases_by_requester ON cases (requester, opened_ms);
        CREATE INDEX cases_by_executor ON cases (executor, opened_ms);
        -- The optional header fields of each message, for inbox listings: its handling
        -- code (shown before it is opened), and a status's new state or a case's due day.
        ALTER TABLE messages ADD COLUMN handling TEXT;
        ALTER TABLE messages ADD COLUMN case_state TEXT;
        ALTER TABLE messages ADD COLUMN due TEXT;
        """,
    ),
    (
        14,
        """
        -- Operators' queue control (``gateway queue``): how many times each queued
        -- message was posted to its partner without being taken, and the last error.
        ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE outbox ADD COLUMN last_error TEXT;
        """,
    ),
    (
        15,
        """
        -- An officer's sent messages (GET /v1/sent): those it sent through this gateway,
        -- by its signing key id, in the order accepted.
        CREATE INDEX messages_sent_by ON messages (actor, mseq) WHERE origin = 'local';
        """,
    ),
]
