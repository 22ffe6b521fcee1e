/*
 * tm-send's queue directory (--queue DIR, --flush DIR): one file per
 * message and recipient domain, written whole and renamed into place, so
 * that a reader sees an old entry or a new one, never half of one.
 *
 *   tm-queue 1
 *   state deferred|attempting|held
 *   from SENDER
 *   rcpt ADDRESS            (one line each)
 *   attempts N
 *   first UNIX-TIME         (when it was queued)
 *   next UNIX-TIME          (when a flush may try it)
 *   last TEXT               (the last outcome, one line)
 *   <empty line>
 *   the message, as it is sent
 *
 * Entries are named q-*; the temporary files .tmp-*.
 */
#ifndef TM_QUEUE_H
#define TM_QUEUE_H

#include <stddef.h>

#include "sendmail.h"

typedef struct {
    char state[16];
    char *from;
    sm_list rcpts;
    unsigned attempts;
    long long first, next;
    char last[512];
    char *buf;          /* the file; data points into it */
    const char *data;
    size_t size;
} q_entry;

/* Writes e (its data, size) to dir/name, or to a new name when *name is
 * empty (written back into name, cap bytes): a temporary file, fsync,
 * rename, fsync of the directory.  0, or -1 with errno. */
int q_write(const char *dir, char *name, size_t cap, const q_entry *e);

/* Reads dir/name into e (free with q_free).  0, -1 with errno, or -2 (not
 * an entry: a syntax error). */
int q_read(const char *dir, const char *name, q_entry *e);
void q_free(q_entry *e);

/* Removes dir/name and makes that durable.  0, or -1 with errno. */
int q_remove(const char *dir, const char *name);

/* The retry schedule: seconds to wait after attempt number n (1, 2, ...):
 * 5 minutes, doubling, at most 4 hours. */
long long q_backoff(unsigned n);

/* An entry older than this is given up (5 days). */
#define Q_MAX_AGE (5LL * 24 * 3600)

#endif
