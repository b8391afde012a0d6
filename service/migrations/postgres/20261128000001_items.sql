-- Items and POST idempotency keys (PostgreSQL).
CREATE TABLE items (
    id          UUID PRIMARY KEY,         -- UUIDv7, time-ordered
    name        TEXT NOT NULL,
    name_lower  TEXT NOT NULL,            -- lower-cased in Rust, for `q` on both backends alike
    description TEXT,
    price_cents BIGINT NOT NULL CHECK (price_cents > 0),
    quantity    BIGINT NOT NULL CHECK (quantity >= 0),
    tags        TEXT[] NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 1)
);

CREATE INDEX items_tags ON items USING GIN (tags);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    item_id     UUID NOT NULL,
    response    TEXT NOT NULL,            -- the item JSON as first returned
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
