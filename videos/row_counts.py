"""Exact row counts of the listed tables without reading them: counters kept by database triggers.

`count/` of an unfiltered list must give the exact number of rows, and `SELECT count(*)` reads the whole table
(100,000 archives: a scan of every row's stream_settings). Triggers on each counted table add the rows every
INSERT and DELETE statement changes to a counter row in the same transaction, whatever issued it (services, the
admin, cascades, bulk inserts, COPY), so a reader's snapshot always sees rows and counters that agree.

PostgreSQL: statement-level triggers with transition tables (one counter update per statement, not per row);
the counter rows are spread over `SLOTS` slots chosen by the writer's backend, so concurrent writers (workers
storing events, a purge holding its transaction open) do not queue on one row; TRUNCATE resets the counters.
SQLite (one writer at a time anyway): row-level triggers on slot 0.

The counter table is no Django model table (videos.models.RowCount is unmanaged), so Django's test flush
leaves it to the triggers. A migration that rebuilds a counted table (SQLite remakes tables for many field
changes, dropping their triggers) must call `install` again: it (re)creates the triggers and recounts under a lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "videos_rowcount"
SLOTS = 16
# Every table whose list has a count/ endpoint.
COUNTED_TABLES = (
    "videos_videoarchive",
    "videos_faceevent", "videos_bodyevent", "videos_carevent",
    "videos_facecluster", "videos_bodycluster", "videos_carcluster",
)

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    table_name varchar(64) NOT NULL,
    slot integer NOT NULL,
    rows bigint NOT NULL,
    PRIMARY KEY (table_name, slot)
)
"""

_PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION ffv_rowcount_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM ffv_new_rows;
    IF delta > 0 THEN
        INSERT INTO {TABLE} (table_name, slot, rows) VALUES (TG_TABLE_NAME, pg_backend_pid() % {SLOTS}, delta)
        ON CONFLICT (table_name, slot) DO UPDATE SET rows = {TABLE}.rows + EXCLUDED.rows;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION ffv_rowcount_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE delta bigint;
BEGIN
    SELECT count(*) INTO delta FROM ffv_old_rows;
    IF delta > 0 THEN
        INSERT INTO {TABLE} (table_name, slot, rows) VALUES (TG_TABLE_NAME, pg_backend_pid() % {SLOTS}, -delta)
        ON CONFLICT (table_name, slot) DO UPDATE SET rows = {TABLE}.rows + EXCLUDED.rows;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION ffv_rowcount_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {TABLE} WHERE table_name = TG_TABLE_NAME;
    RETURN NULL;
END $$;
"""


def _pg_statements(table: str) -> list[str]:
    return [
        # Writers wait while the counters are rebuilt, so none is counted twice or missed.
        f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
        f"DROP TRIGGER IF EXISTS ffv_rowcount_insert ON {table}",
        f"DROP TRIGGER IF EXISTS ffv_rowcount_delete ON {table}",
        f"DROP TRIGGER IF EXISTS ffv_rowcount_truncate ON {table}",
        f"DELETE FROM {TABLE} WHERE table_name = '{table}'",
        f"INSERT INTO {TABLE} (table_name, slot, rows) SELECT '{table}', 0, count(*) FROM {table}",
        f"CREATE TRIGGER ffv_rowcount_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS ffv_new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION ffv_rowcount_insert()",
        f"CREATE TRIGGER ffv_rowcount_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS ffv_old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION ffv_rowcount_delete()",
        f"CREATE TRIGGER ffv_rowcount_truncate AFTER TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ffv_rowcount_truncate()",
    ]


def _sqlite_statements(table: str) -> list[str]:
    upsert = (f"INSERT INTO {TABLE} (table_name, slot, rows) VALUES ('{table}', 0, %s) "
              f"ON CONFLICT (table_name, slot) DO UPDATE SET rows = rows + excluded.rows;")
    return [
        f"DROP TRIGGER IF EXISTS ffv_rowcount_insert_{table}",
        f"DROP TRIGGER IF EXISTS ffv_rowcount_delete_{table}",
        f"DELETE FROM {TABLE} WHERE table_name = '{table}'",
        f"INSERT INTO {TABLE} (table_name, slot, rows) SELECT '{table}', 0, count(*) FROM {table}",
        f"CREATE TRIGGER ffv_rowcount_insert_{table} AFTER INSERT ON {table} BEGIN {upsert % 1} END",
        f"CREATE TRIGGER ffv_rowcount_delete_{table} AFTER DELETE ON {table} BEGIN {upsert % -1} END",
    ]


def install(connection: BaseDatabaseWrapper, tables: Iterable[str] = COUNTED_TABLES) -> None:
    """Create the counter table and the triggers of `tables`, and count their rows now (idempotent).

    Run inside a transaction (migrations are), so the recount and the triggers start together.
    """
    if connection.vendor == "postgresql":
        statements = [CREATE_TABLE, _PG_FUNCTIONS, *(s for table in tables for s in _pg_statements(table))]
    elif connection.vendor == "sqlite":
        statements = [CREATE_TABLE, *(s for table in tables for s in _sqlite_statements(table))]
    else:
        raise NotImplementedError(f"row counters need PostgreSQL or SQLite, not {connection.vendor}")
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def uninstall(connection: BaseDatabaseWrapper, tables: Iterable[str] = COUNTED_TABLES) -> None:
    with connection.cursor() as cursor:
        for table in tables:
            if connection.vendor == "postgresql":
                for name in ("insert", "delete", "truncate"):
                    cursor.execute(f"DROP TRIGGER IF EXISTS ffv_rowcount_{name} ON {table}")
            else:
                for name in ("insert", "delete"):
                    cursor.execute(f"DROP TRIGGER IF EXISTS ffv_rowcount_{name}_{table}")
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS ffv_rowcount_insert(), ffv_rowcount_delete(), "
                           "ffv_rowcount_truncate()")
