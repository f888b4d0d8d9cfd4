-- capbench — the schema of the system under test (CommonTrace, after the seeds), one source for
-- every path: the setup binary, the tests and the benches read this file (include_str!).
--
-- Sections are separated by `-- @section NAME` lines; `{{dims}}`, `{{m}}` and `{{ef_construction}}`
-- are filled in from the configuration. To apply it by hand:
--   sed -e 's/{{dims}}/1536/; s/{{m}}/16/; s/{{ef_construction}}/64/' setup/schema.sql | psql "$DATABASE_URL"

-- @section base
-- Objects that live beside the dataset and survive a rebuild of it.
CREATE EXTENSION IF NOT EXISTS vector;

-- Every API key gets a user of its own: `email` is a contact label, not an identity (the
-- unauthenticated POST /api/v1/keys cannot prove who owns an address), so it repeats. Only seed
-- users (the dataset's contributor) are unique by email.
CREATE TABLE IF NOT EXISTS users (
    id           uuid PRIMARY KEY,
    email        text NOT NULL,
    display_name text,
    is_seed      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- Databases made before that had `email ... UNIQUE`: drop it (checked first, so that a start
-- against a migrated database takes no lock on the table).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'users'::regclass AND conname = 'users_email_key') THEN
        ALTER TABLE users DROP CONSTRAINT users_email_key;
    END IF;
END
$$;
CREATE UNIQUE INDEX IF NOT EXISTS ux_users_seed_email ON users (email) WHERE is_seed;

CREATE TABLE IF NOT EXISTS api_keys (
    id         uuid PRIMARY KEY,
    key_hash   text NOT NULL UNIQUE,          -- SHA-256 of the key; the key itself is never stored
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ix_api_keys_user_id ON api_keys (user_id);

-- One row: which dataset is loaded (its fingerprint covers every generation and index parameter)
-- and what the load measured. Written last, in the same transaction as the data it describes.
CREATE TABLE IF NOT EXISTS capacity_meta (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    fingerprint text NOT NULL,
    params      jsonb NOT NULL,
    figures     jsonb NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);

-- The index variants built beside the HNSW index (setup --index; src/db/variant.rs), one row each:
-- the dataset fingerprint it was built for (a rebuilt dataset drops the old table's indexes, and a
-- row naming another fingerprint is stale), and pgvector's build as it ran.
CREATE TABLE IF NOT EXISTS capacity_variants (
    variant              text PRIMARY KEY,
    fingerprint          text NOT NULL,
    index_name           text NOT NULL,
    settings             text NOT NULL,
    build_seconds        double precision NOT NULL,
    workers              integer NOT NULL,
    maintenance_work_mem bigint NOT NULL,
    notices              text[] NOT NULL DEFAULT '{}',
    built_at             timestamptz NOT NULL DEFAULT now()
);

-- The query sets and their exact top-k neighbours (ground truth) per filter, computed by brute
-- force for the dataset whose truth fingerprint each row carries (it covers the dataset fingerprint,
-- the number of queries and k). `query_set`: heldout, near-duplicate, ood, or one of them drawn
-- within a correlated tag (heldout/c1, …); `filter`: '' or the tag every result must carry.
DROP TABLE IF EXISTS capacity_queries; -- truth v1's single set (derived data, recomputed)
CREATE TABLE IF NOT EXISTS capacity_query_vectors (
    query_set   text NOT NULL,
    query_no    integer NOT NULL,
    fingerprint text NOT NULL,
    embedding   vector NOT NULL,
    PRIMARY KEY (query_set, query_no)
);
CREATE TABLE IF NOT EXISTS capacity_truth (
    query_set       text NOT NULL,
    filter          text NOT NULL,
    query_no        integer NOT NULL,
    fingerprint     text NOT NULL,
    truth_ids       uuid[] NOT NULL,
    truth_distances double precision[] NOT NULL,
    PRIMARY KEY (query_set, filter, query_no)
);

-- The dataset's own rows changed since setup loaded them, by id: written by the triggers of section
-- dataset_guard, emptied by a rebuild and by `setup --restore` (which rewrites these rows from the
-- generator).
CREATE TABLE IF NOT EXISTS capacity_changes (
    id         uuid PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- @section traces_table
-- Created in a private schema inside the load transaction, filled by binary COPY, then swapped in.
-- Keys and foreign keys come after the load (section traces_constraints): that is how pg_dump
-- restores, and it is several times faster than checking them row by row.
CREATE TABLE traces (
    id                 uuid NOT NULL,
    title              text NOT NULL,
    context_text       text NOT NULL,
    solution_text      text NOT NULL,
    embedding          vector({{dims}}),
    embedding_model_id text,
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'validated', 'rejected')),
    trust_score        double precision NOT NULL DEFAULT 0,
    confirmation_count integer NOT NULL DEFAULT 0,
    contributor_id     uuid NOT NULL,
    is_seed            boolean NOT NULL DEFAULT false,
    is_flagged         boolean NOT NULL DEFAULT false,
    agent_model        text,
    agent_version      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Filterable tags (src/dataset/tags.rs: u50 … u0.1 blind to the clusters, c50 … c0.1 following
    -- them). The seeds keep tags in a join table; an array with a GIN index is pgvector's own
    -- advice for filtered search (the planner can then pick an exact scan of the matching rows).
    tags               text[] NOT NULL DEFAULT '{}'
);

-- @section traces_constraints
ALTER TABLE traces
    ADD CONSTRAINT traces_pkey PRIMARY KEY (id),
    ADD CONSTRAINT traces_contributor_id_fkey FOREIGN KEY (contributor_id)
        REFERENCES users (id) ON DELETE CASCADE;
CREATE INDEX ix_traces_tags ON traces USING gin (tags);

-- @section traces_index
-- The seeds' index name; cosine distance (`<=>`) as the seeds' search uses.
CREATE INDEX ix_traces_embedding_hnsw ON traces
    USING hnsw (embedding vector_cosine_ops)
    WITH (m = {{m}}, ef_construction = {{ef_construction}});

-- @section index_halfvec
-- Half-precision HNSW as an expression index beside the full-precision one (pgvector >= 0.7): half
-- the size. Queried with the same expression: ORDER BY embedding::halfvec(dims) <=> $1::halfvec(dims).
CREATE INDEX ix_traces_embedding_halfvec ON traces
    USING hnsw ((embedding::halfvec({{dims}})) halfvec_cosine_ops)
    WITH (m = {{m}}, ef_construction = {{ef_construction}});

-- @section index_bq
-- Binary quantization: one bit per dimension, Hamming distance (pgvector >= 0.7), 32x smaller than
-- vector; the query takes candidates from it and re-ranks them by exact cosine distance.
CREATE INDEX ix_traces_embedding_bq ON traces
    USING hnsw ((binary_quantize(embedding)::bit({{dims}})) bit_hamming_ops)
    WITH (m = {{m}}, ef_construction = {{ef_construction}});

-- @section index_ivfflat
-- IVFFlat on an expression equal to the embedding (subvector of all its dimensions), so that it
-- never competes with the HNSW index for the same ORDER BY: each query names the index it means.
-- Built after the load (k-means needs the data); lists: rows / 1000 up to 1M rows, sqrt(rows) above.
CREATE INDEX ix_traces_embedding_ivfflat ON traces
    USING ivfflat ((subvector(embedding, 1, {{dims}})::vector({{dims}})) vector_cosine_ops)
    WITH (lists = {{lists}});

-- @section dataset_guard
-- Logs every change to a row of the dataset (a seed row) after setup loaded it: a DELETE, or an
-- UPDATE of what a search sees or filters on (embedding, its model, status, the flag, tags, the
-- contributor). One call per statement, not per row. `setup` and the benches refuse a changed
-- dataset, since they measure it as generated; `setup --restore` rewrites exactly the logged rows.
-- Rows written through the API are not seed rows: never logged, never restored.
CREATE OR REPLACE FUNCTION capacity_log_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO capacity_changes (id) SELECT id FROM old_rows WHERE is_seed ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION capacity_log_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO capacity_changes (id)
    SELECT o.id FROM old_rows o LEFT JOIN new_rows n ON n.id = o.id
    WHERE o.is_seed
      AND (n.id IS NULL
           OR n.embedding IS DISTINCT FROM o.embedding
           OR n.embedding_model_id IS DISTINCT FROM o.embedding_model_id
           OR n.status IS DISTINCT FROM o.status
           OR n.is_flagged IS DISTINCT FROM o.is_flagged
           OR n.tags IS DISTINCT FROM o.tags
           OR n.is_seed IS DISTINCT FROM o.is_seed
           OR n.contributor_id IS DISTINCT FROM o.contributor_id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER capacity_dataset_deletes AFTER DELETE ON traces
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION capacity_log_deletes();
CREATE OR REPLACE TRIGGER capacity_dataset_updates AFTER UPDATE ON traces
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION capacity_log_updates();
