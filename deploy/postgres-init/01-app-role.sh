#!/bin/sh
# The database role the web service and the workers log in as (docker-compose.yml). Run by the
# postgres image once, when its volume is first initialised, as the owner (POSTGRES_USER).
# `clipmed migrate` then grants it only what the service needs (app/db_roles.py): INSERT and
# SELECT on the audit trail, no ownership, not a superuser. The password comes from a secret
# file, never from the command line.
set -eu
password_file="${CLIPMED_DB_APP_PASSWORD_FILE:-/run/secrets/db_app_secret}"
if [ ! -s "$password_file" ]; then
    echo "01-app-role.sh: no password in $password_file (set CLIPMED_DB_APP_PASSWORD)" >&2
    exit 1
fi
app_password="$(cat "$password_file")"
export app_password
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_role="${CLIPMED_DB_APP_ROLE:-clipmed_app}" <<'SQL'
\getenv app_password app_password
CREATE ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
    PASSWORD :'app_password';
SQL
