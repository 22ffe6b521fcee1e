/*
 * tm-send's queue directory (--queue DIR, --flush DIR): one file per
 * message and recipient domain, written whole and renamed into place, so
 * that a reader sees an old entry or a new one, never half of one.
 *
 *   tm-queue 1
 *   state deferred|attempting|held
 *   from SENDER             ("from " alone: the null sender)
 *   user LOGIN              (optional: the local account that submitted it)
 *   rcpt ADDRESS            (one line each, at least one)
 *   attempts N
 *   first UNIX-TIME         (when it was queued)
 *   next UNIX-TIME          (when a flush may try it)
 *   last TEXT               (the last outcome, one line)
 *   <empty line>
 *   the message, as it is sent
 *
 * Keys are followed by one space and the value, which runs to the LF and
 * holds no CR or LF.  A reader ignores keys it does not know (written by a
 * newer tm-send); "user" came after version 1 was first written, so
 * entries without it are read as having none.  Entries are named q-*; the
 * temporary files .tmp-*.
 */
#ifndef TM_QUEUE_H
#define TM_QUEUE_H

#include <stddef.h>

#include "sendmail.h"

typedef struct {
    char state[16];
    char *from;
    char user[64];      /* LOGIN, "" when none (see q_user_ok) */
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
 * rename, fsync of the directory.  The user line is written when e->user
 * is not empty.  0, or -1 with errno (EINVAL: a CR or LF in a value, or a
 * user that q_user_ok refuses). */
int q_write(const char *dir, char *name, size_t cap, const q_entry *e);

/* Parses the entry in buf (len bytes, NUL-terminated or not) into e.
 * Takes ownership of buf in every case: on success it is e->buf (e->data
 * points into it; free both with q_free), on failure it has been freed and
 * e is zeroed.  0, -1 (out of memory), or -2 (not an entry: no "tm-queue 1"
 * line, no empty line, a line without a value, a state other than the
 * three, a number that is not one, a user q_user_ok refuses, an empty
 * rcpt, or state, from, rcpt, first or next missing). */
int q_parse(char *buf, size_t len, q_entry *e);

/* Reads dir/name into e (free with q_free): opened without following a
 * symbolic link, read whole, then q_parse.  0, -1 with errno, or -2 (not
 * an entry: a symbolic link, anything but a regular file, or what q_parse
 * refuses). */
int q_read(const char *dir, const char *name, q_entry *e);
void q_free(q_entry *e);

/* Whether s is acceptable as an entry's user: 1 to 63 printable ASCII
 * bytes other than space and '/', not "." or "..", not starting with '-'.
 * A name that passes is safe in a path and on a command line, but may
 * still name no account: look it up (getpwnam) before using it. */
int q_user_ok(const char *s);

/* Removes dir/name and makes that durable.  0, or -1 with errno. */
int q_remove(const char *dir, const char *name);

/* The retry schedule: seconds to wait after attempt number n (1, 2, ...):
 * 5 minutes, doubling, at most 4 hours. */
long long q_backoff(unsigned n);

/* An entry older than this is given up (5 days). */
#define Q_MAX_AGE (5LL * 24 * 3600)

#endif
