#!/bin/sh
# libtlsmail benchmark: builds, starts private peers, runs every case, prints
# one table.  Arguments go to run.py (see bench/README.md), e.g. --quick.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
