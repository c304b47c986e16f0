"""Rows per second written through the mysql sink's ``write`` beside the server's own bulk rate.

Results are built before the clock starts (the master hands the sink finished results); the
sink's time covers turning them into rows, encoding them and sending them, one transaction per
batch of ``batch_size``: with ``load_data = true``, a LOAD DATA LOCAL INFILE fed through a pipe
where the server allows it ("write"), and with the default ``load_data = false``, INSERTs
("write, default").  The server's rate is measured on the same rows into a table of the
same layout, one transaction per batch too, with nothing left for the client to do: LOAD DATA
LOCAL INFILE from files written beforehand (when the server allows it), and multi-row INSERT
statements built beforehand.  Sink and server run interleaved, round by round; the sink's
rates are compared with the better of the two (target: >= 0.8x).  The rates of the client's
stages alone (the layout's row building, the text LOAD DATA reads, mysqlclient's quoting for
INSERTs) show where its time goes.  Each layout writes into a table of its own, dropped at the
end.

The sink's work and the server's overlap, so the sink needs two processors to itself: on a
machine where other programs keep a processor busy, its rate falls further than the server's.

    python plugins/cyclone_mysql_sink/benchmarks/rows_per_second.py --rows 200000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid

import MySQLdb
from cyclone_mysql_sink import MySQLSink, tsv

from cyclone_core import Metric, Result, Status, structure


def make_results(count: int, run: str) -> list[Result]:
    """Results shaped like a lustre-ost-io probe's: five labelled metrics each."""
    now = time.time()
    results = []
    for i in range(count):
        labels = {"fs": "lustre", "component": "ost", "target": f"lustre-OST{i % 512:04x}"}
        metrics = [
            Metric("cyclone_lustre_ost_write_bytes_per_second", 5.1e8 + i, "bytes/s", labels, now),
            Metric("cyclone_lustre_ost_read_bytes_per_second", 2.4e9 + i, "bytes/s", labels, now),
            Metric("cyclone_lustre_ost_write_seconds", 2.1, "s", labels, now),
            Metric("cyclone_lustre_ost_read_seconds", 0.45, "s", labels, now),
            Metric("cyclone_lustre_ost_probe_bytes", 1 << 30, "bytes", labels, now),
        ]
        results.append(
            Result(
                task_id=f"{run}-{i}",
                task_type="lustre-ost-io",
                status=Status.OK,
                key=f"OST{i % 512:04x}",
                started_at=now,
                duration=2.6,
                metrics=metrics,
                controller="node01-4242",
            )
        )
    return results


def measure(
    options: dict[str, object], layout: str, count: int, batch_size: int, rounds: int
) -> dict[str, list[float]]:
    """Rows per second through the sink's ``write`` and, for the same rows into a table of the
    same layout, the server's own bulk rates (LOAD DATA LOCAL INFILE from files, and pre-built
    multi-row INSERTs), interleaved round by round; then each of ``write``'s stages alone."""
    table = f"cyclone_bench_{uuid.uuid4().hex[:8]}"
    where = "sink 'mysql'"
    config = {**options, "table": table, "layout": layout, "batch_size": batch_size}
    sink = structure({**config, "load_data": True}, MySQLSink, where=where)
    default = structure(config, MySQLSink, where=where)
    results = make_results(count, table)
    batches = [results[i : i + batch_size] for i in range(0, count, batch_size)]
    sink.open()
    default.open()
    # The benchmark's own connection, allowed to send local files (the server must allow it too).
    server = MySQLdb.connect(
        **{k: v for k, v in options.items() if k in ("host", "port", "user", "database")},
        charset="utf8mb4",
        autocommit=False,
        local_infile=1,
        init_command="SET time_zone = '+00:00'",
    )
    cursor = server.cursor()
    rows = [sink.schema.rows(batch) for batch in batches]
    values = "(" + ", ".join(["%s"] * len(sink.schema.columns)) + ")"
    insert = sink.schema.insert_sql(table)
    prefix, suffix = insert[: insert.index(" VALUES ") + 8], insert[insert.index(" ON DUPLICATE") :]
    statements = [prefix + ",".join(cursor.mogrify(values, row) for row in batch) + suffix for batch in rows]
    cursor.execute("SELECT @@local_infile")
    local_infile = bool(cursor.fetchone()[0])
    scratch = tempfile.mkdtemp(prefix="cyclone-bench-mysql-")
    files = []
    for number, batch in enumerate(rows):
        path = os.path.join(scratch, f"{number}.tsv")
        with open(path, "wb") as file:
            file.write(tsv.encode(batch))
        files.append(path)
    load = "LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE `{table}` CHARACTER SET utf8mb4 ({columns})".replace(
        "{table}", table
    ).replace("{columns}", ", ".join(sink.schema.columns))
    rates: dict[str, list[float]] = {"write": [], "write, default": [], "load data": [], "insert": []}

    def stored() -> None:
        cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
        found = cursor.fetchone()[0]
        server.commit()
        if found != count:
            raise SystemExit(f"{layout}: {found} rows stored, {count} written")
        cursor.execute(f"TRUNCATE TABLE `{table}`")

    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for batch in batches:
                sink.write(batch)
            rates["write"].append(count / (time.perf_counter() - started))
            stored()
            started = time.perf_counter()
            for batch in batches:
                default.write(batch)
            rates["write, default"].append(count / (time.perf_counter() - started))
            stored()
            if local_infile:
                started = time.perf_counter()
                for path in files:
                    cursor.execute(load, (path,))
                    server.commit()
                rates["load data"].append(count / (time.perf_counter() - started))
                stored()
            started = time.perf_counter()
            for statement in statements:
                cursor.execute(statement)
                server.commit()
            rates["insert"].append(count / (time.perf_counter() - started))
            stored()

        # The client's stages of write alone: results -> rows (the layout), rows -> LOAD DATA's
        # text, rows -> quoted SQL values (mysqlclient, for INSERTs).
        started = time.perf_counter()
        rows = [sink.schema.rows(batch) for batch in batches]
        rates["layout alone"] = [count / (time.perf_counter() - started)]
        started = time.perf_counter()
        for batch in rows:
            tsv.encode(batch)
        rates["text alone"] = [count / (time.perf_counter() - started)]
        started = time.perf_counter()
        for batch in rows:
            ",".join(cursor.mogrify(values, row) for row in batch)
        rates["quoting alone"] = [count / (time.perf_counter() - started)]
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        server.close()
        sink.close()
        default.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if not local_infile:
        print(f"{layout}: the server refuses LOAD DATA LOCAL INFILE (@@local_infile = 0): INSERTs only")
        del rates["load data"]
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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the sink and the server")
    args = parser.parse_args()
    options = {"host": args.host, "port": args.port, "user": args.user, "database": args.database}
    layouts = ["results", "ost_perf"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        rates = measure(options, layout, args.rows, args.batch_size, args.rounds)
        best = max(statistics.median(rates["insert"]), statistics.median(rates.get("load data", [0.0])))
        text = ", ".join(
            f"{name} {statistics.median(values):,.0f}"
            + (f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else "")
            for name, values in rates.items()
        )
        ratio, default = (statistics.median(rates[name]) / best for name in ("write", "write, default"))
        print(
            f"{layout:8s} {args.rows:,} rows, batch_size {args.batch_size}, rows/s: {text}; "
            f"the sink does {ratio:.2f}x the server's best bulk rate with load_data = true, "
            f"{default:.2f}x with the default INSERTs (target >= 0.8x)"
        )


if __name__ == "__main__":
    main()
