#!/bin/sh
# Runs once, when the PostgreSQL volume is created: the bridge's own role and database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE ROLE entbridge LOGIN PASSWORD '${ENT_BRIDGE_DB_PASSWORD}';
CREATE DATABASE entbridge OWNER entbridge;
SQL
