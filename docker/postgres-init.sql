-- Second database of the local stack's PostgreSQL (docker-compose.yml, service `postgres`).
--
-- The postgres image runs /docker-entrypoint-initdb.d/*.sql once, on the first start with an empty data
-- volume, as POSTGRES_USER (airflow, a superuser) connected to POSTGRES_DB (airflow). The image itself
-- creates the Airflow metadata database `airflow` from POSTGRES_DB; this script adds the warehouse that
-- `pss step publish` writes the similar_items table to. To re-run it: docker compose down -v.
--
-- The warehouse gets its own login, `pss`, which owns it (and so may create the table and the view in its
-- public schema) and cannot connect to the Airflow metadata database.

CREATE ROLE pss LOGIN PASSWORD 'pss';

CREATE DATABASE warehouse OWNER pss;

REVOKE ALL ON DATABASE warehouse FROM PUBLIC;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
