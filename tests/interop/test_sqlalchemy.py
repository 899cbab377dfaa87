"""flightsql-dbapi with SQLAlchemy: the inspector must see tables and columns."""

from sqlalchemy import create_engine, inspect, text

from conftest import PASSWORD


def engine_for(server):
    return create_engine(f"datafusion://admin:{PASSWORD}@127.0.0.1:{server.port}?insecure=true")


def test_inspector_lists_tables_and_columns(server):
    engine = engine_for(server)
    inspector = inspect(engine)
    assert "demo" in inspector.get_schema_names()
    assert sorted(inspector.get_table_names(schema="demo")) == ["customers", "orders"]
    columns = {c["name"]: c for c in inspector.get_columns("customers", schema="demo")}
    assert list(columns) == ["customer_id", "name", "email", "region", "signup_date", "lifetime_value"]
    assert columns["customer_id"]["nullable"] is True


def test_queries_run_through_sqlalchemy(server):
    engine = engine_for(server)
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM demo.customers")).scalar()
        names = connection.execute(text("SELECT name FROM demo.customers ORDER BY customer_id LIMIT 3")).fetchall()
    assert total == 1000
    assert len(names) == 3 and all(isinstance(row[0], str) for row in names)
