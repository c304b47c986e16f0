"""Rows per second written through the mysql sink's ``write`` in batches of ``batch_size``.

Results are built before the clock starts (the master hands the sink finished results); the
time covers turning them into rows, the multi-row INSERTs and one commit per batch.  Each
layout writes into a table of its own, dropped at the end.  The rates of the three stages of
``write`` measured alone (the layout's row building, mysqlclient's quoting of the values, the
server storing pre-built statements) show where the time goes.

    python plugins/cyclone_mysql_sink/benchmarks/rows_per_second.py --rows 200000
"""

from __future__ import annotations

import argparse
import time
import uuid

from cyclone_mysql_sink import MySQLSink

from cyclone_core import Metric, Result, Status, structure


def make_results(count: int, run: str) -> list[Result]:
    """Results shaped like a lustre-ost-io probe's: five labelled metrics each."""
    now = time.time()
    results = []
    for i in range(count):
        labels = {"fs": "lustre", "ost": f"OST{i % 512:04x}"}
        metrics = [
            Metric("lustre_ost_write_bytes_per_second", 5.1e8 + i, "bytes/s", labels, now),
            Metric("lustre_ost_read_bytes_per_second", 2.4e9 + i, "bytes/s", labels, now),
            Metric("lustre_ost_write_seconds", 2.1, "s", labels, now),
            Metric("lustre_ost_read_seconds", 0.45, "s", labels, now),
            Metric("lustre_ost_probe_bytes", 1 << 30, "bytes", labels, now),
        ]
        results.append(
            Result(
                task_id=f"{run}-{i}",
                task_type="lustre-ost-io",
                status=Status.OK,
                key=labels["ost"],
                started_at=now,
                duration=2.6,
                metrics=metrics,
                controller="node01-4242",
            )
        )
    return results


def measure(options: dict[str, object], layout: str, count: int, batch_size: int) -> dict[str, float]:
    """Write ``count`` results with a new sink; return rows per second through ``write`` and,
    for the same rows, through each of its three stages alone."""
    table = f"cyclone_bench_{uuid.uuid4().hex[:8]}"
    where = "sink 'mysql'"
    sink = structure({**options, "table": table, "layout": layout, "batch_size": batch_size}, MySQLSink, where=where)
    results = make_results(count, table)
    batches = [results[i : i + batch_size] for i in range(0, count, batch_size)]
    sink.open()
    connection = sink._connection
    cursor = connection.cursor()
    rates: dict[str, float] = {}
    try:
        started = time.perf_counter()
        for batch in batches:
            sink.write(batch)
        rates["write"] = count / (time.perf_counter() - started)
        cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
        stored = cursor.fetchone()[0]
        if stored != count:
            raise SystemExit(f"{layout}: {stored} rows stored, {count} written")
        cursor.execute(f"TRUNCATE TABLE `{table}`")

        # The stages of write: results -> rows (the layout), rows -> quoted SQL values
        # (mysqlclient), multi-row statements -> stored and committed (the server).
        started = time.perf_counter()
        rows = [sink.schema.rows(batch) for batch in batches]
        rates["layout"] = count / (time.perf_counter() - started)
        values = "(" + ", ".join(["%s"] * len(sink.schema.columns)) + ")"
        started = time.perf_counter()
        quoted = [",".join(cursor.mogrify(values, row) for row in batch) for batch in rows]
        rates["quoting"] = count / (time.perf_counter() - started)
        insert = sink.schema.insert_sql(table)
        prefix, suffix = insert[: insert.index(" VALUES ") + 8], insert[insert.index(" ON DUPLICATE") :]
        started = time.perf_counter()
        for batch in quoted:
            cursor.execute(prefix + batch + suffix)
            connection.commit()
        rates["server"] = count / (time.perf_counter() - started)
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        sink.close()
    return rates


def main() -> None:
    """Parse the options, run each layout, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    parser.add_argument("--database", default="test")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--layout", choices=["results", "ost_perf", "both"], default="both")
    args = parser.parse_args()
    options = {"host": args.host, "port": args.port, "user": args.user, "database": args.database}
    layouts = ["results", "ost_perf"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        rates = measure(options, layout, args.rows, args.batch_size)
        stages = ", ".join(f"{stage} alone {rate:,.0f}" for stage, rate in rates.items() if stage != "write")
        print(f"{layout:8s} {args.rows} rows, batch_size {args.batch_size}: {rates['write']:,.0f} rows/s ({stages})")


if __name__ == "__main__":
    main()
