-- resendd: outside-transaction
-- resendd schema 3: give space back after purges. auto_vacuum can only change with a VACUUM,
-- which cannot run inside a transaction (hence the marker above); on a large database this
-- upgrade rewrites the file once.
PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;
