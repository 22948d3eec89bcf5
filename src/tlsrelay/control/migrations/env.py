"""Alembic environment for the control store, run programmatically.

`tlsrelay.control.db.upgrade` passes an open connection in
`config.attributes["connection"]`; there is no alembic.ini and no offline
(SQL script) mode. Batch mode keeps ALTERs working on SQLite.
"""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tlsrelay.control.db.upgrade")

context.configure(
    connection=connection,
    target_metadata=None,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
