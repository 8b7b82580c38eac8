-- The demo's small Django-like schema, created on the master and on the slave.
-- Foreign keys are made the way Django's migrate makes them: DEFERRABLE
-- INITIALLY DEFERRED, no ON DELETE action (the rules live in sidecar.yaml).

-- System models (synced from the master).
CREATE TABLE shop_category (id bigserial PRIMARY KEY, name varchar(50) NOT NULL UNIQUE);
CREATE TABLE shop_unit (
    id bigserial PRIMARY KEY,
    name varchar(50) NOT NULL,
    category_id bigint REFERENCES shop_category (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE shop_marker (
    id bigserial PRIMARY KEY,
    unit_id bigint NOT NULL REFERENCES shop_unit (id) DEFERRABLE INITIALLY DEFERRED,
    name varchar(50) NOT NULL
);
CREATE TABLE shop_outcome (id bigserial PRIMARY KEY, name varchar(50) NOT NULL, score integer NOT NULL DEFAULT 0);

-- User models (each environment's own).
CREATE TABLE app_report (
    id bigserial PRIMARY KEY,
    unit_id bigint NOT NULL REFERENCES shop_unit (id) DEFERRABLE INITIALLY DEFERRED,
    marker_id bigint REFERENCES shop_marker (id) DEFERRABLE INITIALLY DEFERRED,
    outcome_id bigint REFERENCES shop_outcome (id) DEFERRABLE INITIALLY DEFERRED,
    title varchar(50) NOT NULL,
    outcome_name varchar(50)
);
CREATE TABLE app_note (
    id bigserial PRIMARY KEY,
    report_id bigint NOT NULL REFERENCES app_report (id) DEFERRABLE INITIALLY DEFERRED,
    body text NOT NULL
);
CREATE INDEX ON shop_unit (category_id);
CREATE INDEX ON shop_marker (unit_id);
CREATE INDEX ON app_report (unit_id);
CREATE INDEX ON app_report (marker_id);
CREATE INDEX ON app_report (outcome_id);
CREATE INDEX ON app_note (report_id);
