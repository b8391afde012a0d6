-- Items and POST idempotency keys (SQLite).
CREATE TABLE items (
    id          BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16), -- UUIDv7, time-ordered
    name        TEXT NOT NULL,
    name_lower  TEXT NOT NULL,           -- lower-cased in Rust, for `q` on both backends alike
    description TEXT,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    quantity    INTEGER NOT NULL CHECK (quantity >= 0),
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)), -- JSON array of strings
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1)
) STRICT;

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    item_id     BLOB NOT NULL,
    response    TEXT NOT NULL,           -- the item JSON as first returned
    created_at  TEXT NOT NULL
) STRICT;

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
