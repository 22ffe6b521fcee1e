/*
 * hostile.h - run tests/hostile/hostile_smtp.py from a C test and read back
 * what the client did.
 *
 * The server runs as a child process (fork + execv of /usr/bin/python3),
 * listens on loopback, plays a JSON script of connections and writes a JSON
 * record when it is done (see the docstring of hostile_smtp.py for the script
 * steps and the record fields).  Byte strings in the record are latin-1: the
 * field helpers below give back the exact bytes the client sent.
 *
 * Test-only code: not thread-safe with respect to fork in threaded tests,
 * not part of the library.
 */
#ifndef TM_TESTS_HOSTILE_H
#define TM_TESTS_HOSTILE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hostile {
	int pid;               /* server process, 0 when not running */
	int port;              /* port it listens on */
	char dir[256];         /* private temp dir (script, port file, record) */
	char record_path[300]; /* dir/record.json */
	int done_fd;           /* write end of the server's --done-fd, or -1 */
	int notify_fd;         /* read end of its --notify-fd, or -1 */
} hostile;

/*
 * Starts hostile_smtp.py on 127.0.0.1 (ephemeral port) with the JSON script
 * text `script_json`; returns 0 and fills `h` once the server listens
 * (bounded wait, 10 s), -1 on failure (nothing left behind).  cert/key: PEM
 * files for the TLS steps, or NULL when the script has none.  The script path
 * is $TM_HOSTILE_SCRIPT if set, else HOSTILE_SMTP_PY (compile-time macro).
 */
int hostile_start(hostile *h, const char *script_json, const char *cert, const char *key);

/*
 * As hostile_start, listening on `listen` ("127.0.0.2:2525", "[::1]:0"; the
 * server refuses non-loopback addresses and ports 25 and 53).  lifetime_s <= 0
 * means the server's default (60 s).
 */
int hostile_start_at(hostile *h, const char *listen, const char *script_json,
		     const char *cert, const char *key, int lifetime_s);

/*
 * Tells the server that the client is done (it will connect no more and send
 * nothing more: see --done-fd in hostile_smtp.py), so that its waits for
 * further connections ("linger", optional or missing connections) end after
 * a 20 ms grace and its scripted pauses end at once, instead of running
 * their course.  Only once the client really is done: a connection made
 * afterwards may find no server.  Idempotent; hostile_finish does it first.
 */
void hostile_client_done(hostile *h);

/*
 * Says the client is done (hostile_client_done), waits up to timeout_s
 * seconds for the server to exit by itself (end of its script), then stops
 * it (SIGTERM: it still writes its record, with
 * "terminated": true; SIGKILL 3 s later); reads the record into a malloc'd
 * NUL-terminated string (caller frees) and removes the temp dir.  NULL when
 * there is no record.  h->pid is 0 afterwards; calling it again returns NULL.
 */
char *hostile_finish(hostile *h, int timeout_s);

/*
 * Record helpers.  `record` is the text returned by hostile_finish.
 *
 * hostile_field: connections[conn].<field> decoded (field: "received",
 * "received_plain", "received_tls", "received_after_tls_failure", "peer",
 * "tls_version", "tls_cipher", "sni"), malloc'd and NUL-terminated; the byte
 * count (the content may hold NUL bytes) goes to *len when len is not NULL.
 * NULL when missing, not a string, or out of memory.
 */
char *hostile_field(const char *record, int conn, const char *field, size_t *len);

/* Element idx of the array connections[conn].<array> ("lines", "data",
 * "events"), decoded as hostile_field does. */
char *hostile_item(const char *record, int conn, const char *array, int idx, size_t *len);

/* Number of elements of connections[conn].<array>, -1 when missing. */
int hostile_count(const char *record, int conn, const char *array);

/* Number of recorded connections, -1 when the record is malformed. */
int hostile_count_connections(const char *record);

/* 1 when an event of connection `conn` starts with `prefix` (conn < 0: of any
 * connection), else 0. */
int hostile_has_event(const char *record, int conn, const char *prefix);

/* Top-level "unexpected_connections" (-1 when missing). */
int hostile_unexpected(const char *record);

/* Any other top-level integer or boolean (true = 1, false = 0):
 * "missing_connections", "lifetime_expired", "terminated"; -1 when missing. */
int hostile_top_int(const char *record, const char *key);

#ifdef __cplusplus
}
#endif

#endif
