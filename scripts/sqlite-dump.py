#!/usr/bin/env python3
"""Writes a SQLite database as SQL text (schema and rows), the form test fixtures are kept in:
   scripts/sqlite-dump.py DB.sqlite > DB.sql
The tests build the database back from the text; the binary file is never committed."""
import sqlite3
import sys

if len(sys.argv) != 2:
    sys.exit("usage: scripts/sqlite-dump.py DB.sqlite > DB.sql")
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for line in con.iterdump():
    print(line)
