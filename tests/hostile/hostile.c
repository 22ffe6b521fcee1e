/*
 * hostile.c - start/stop tests/hostile/hostile_smtp.py and read its record.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "hostile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef HOSTILE_SMTP_PY
#define HOSTILE_SMTP_PY "tests/hostile/hostile_smtp.py"
#endif
#ifndef HOSTILE_PYTHON
#define HOSTILE_PYTHON "/usr/bin/python3"
#endif

#define START_WAIT_MS 10000
#define TERM_WAIT_MS 3000
#define MAX_RECORD_BYTES (512u * 1024u * 1024u)
#define MAX_DEPTH 64

/* ---- process and files -------------------------------------------------- */

static void sleep_ms(long ms)
{
	struct timespec ts;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int path_in(char *out, size_t outsz, const char *dir, const char *name)
{
	int n = snprintf(out, outsz, "%s/%s", dir, name);
	return (n < 0 || (size_t)n >= outsz) ? -1 : 0;
}

static int write_file(const char *path, const char *text)
{
	size_t len = strlen(text), off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	return close(fd);
}

/* Whole file as a NUL-terminated string, NULL when absent. */
static char *read_file(const char *path, size_t *len_out)
{
	size_t cap = 4096, len = 0;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t r;
		if (cap - len < 2) {
			char *nb;
			if (cap >= MAX_RECORD_BYTES)
				goto fail;
			nb = realloc(buf, cap * 2);
			if (!nb)
				goto fail;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	if (len_out)
		*len_out = len;
	return buf;
fail:
	close(fd);
	free(buf);
	return NULL;
}

/* Empties (one level: the server writes only plain files) and removes our
 * private mkdtemp directory. */
static void remove_dir(const char *dir)
{
	DIR *d;
	struct dirent *e;
	char p[600];
	int guard = 0;

	if (!dir[0])
		return;
	d = opendir(dir);
	if (d) {
		while ((e = readdir(d)) != NULL && guard++ < 1000) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			if (path_in(p, sizeof p, dir, e->d_name) == 0)
				unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* A pause of at most ms that ends early when the server writes to its
 * --notify-fd or exits (the pipe's end).  Only a wake-up: callers check the
 * port file and waitpid themselves.  Once the pipe has ended, short naps. */
static void nap(int *notify_fd, long ms)
{
	struct pollfd p;
	int r;

	if (ms <= 0)
		return;
	if (!notify_fd || *notify_fd < 0) {
		sleep_ms(ms < 2 ? ms : 2);
		return;
	}
	p.fd = *notify_fd;
	p.events = POLLIN;
	p.revents = 0;
	r = poll(&p, 1, ms > 1000 ? 1000 : (int)ms);
	if (r > 0) {
		char buf[64];
		ssize_t n = read(*notify_fd, buf, sizeof buf);
		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			close_fd(notify_fd);
	} else if (r < 0 && errno != EINTR) {
		close_fd(notify_fd);
	}
}

/* waitpid with a bounded wait; 1 when the child is gone (reaped). */
static int wait_child(pid_t pid, long ms, int *notify_fd)
{
	long end = now_ms() + ms;
	for (;;) {
		int st;
		long left;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid || (r < 0 && errno == ECHILD))
			return 1;
		if (r < 0 && errno != EINTR)
			return 1;
		left = end - now_ms();
		if (left <= 0)
			return 0;
		nap(notify_fd, left);
	}
}

static void stop_child(pid_t pid, int *notify_fd)
{
	if (pid <= 0)
		return;
	if (wait_child(pid, 0, notify_fd))
		return;
	kill(pid, SIGTERM);
	if (wait_child(pid, TERM_WAIT_MS, notify_fd))
		return;
	kill(pid, SIGKILL);
	wait_child(pid, TERM_WAIT_MS, notify_fd);
}

/* In the child between fork and exec (async-signal-safe calls only): every
 * descriptor from `from` up closed. */
static void close_from(int from, long max_fd)
{
	long fd;
#if defined(SYS_close_range) && (defined(_GNU_SOURCE) || defined(_DEFAULT_SOURCE))
	if (syscall(SYS_close_range, (unsigned)from, ~0u, 0u) == 0)
		return;
#endif
	for (fd = from; fd < max_fd; fd++)
		close((int)fd);
}

int hostile_start(hostile *h, const char *script_json, const char *cert, const char *key)
{
	return hostile_start_at(h, "127.0.0.1:0", script_json, cert, key, 0);
}

int hostile_start_at(hostile *h, const char *listen, const char *script_json,
		     const char *cert, const char *key, int lifetime_s)
{
	char script_path[300], port_path[300], lifetime[32];
	const char *tmp = getenv("TMPDIR");
	const char *py_script = getenv("TM_HOSTILE_SCRIPT");
	const char *argv[24];
	int argc = 0, devnull, n;
	int done[2] = { -1, -1 }, notify[2] = { -1, -1 };
	long max_fd, end;
	pid_t pid;

	if (!h)
		return -1;
	memset(h, 0, sizeof *h);
	h->done_fd = h->notify_fd = -1;
	if (!listen || !script_json)
		return -1;
	if (!tmp || !tmp[0])
		tmp = "/tmp";
	if (!py_script || !py_script[0])
		py_script = HOSTILE_SMTP_PY;
	n = snprintf(h->dir, sizeof h->dir, "%s/hostile.XXXXXX", tmp);
	if (n < 0 || (size_t)n >= sizeof h->dir || !mkdtemp(h->dir)) {
		h->dir[0] = '\0';
		return -1;
	}
	if (path_in(script_path, sizeof script_path, h->dir, "script.json") ||
	    path_in(port_path, sizeof port_path, h->dir, "port") ||
	    path_in(h->record_path, sizeof h->record_path, h->dir, "record.json") ||
	    write_file(script_path, script_json) != 0)
		goto fail;

	argv[argc++] = HOSTILE_PYTHON;
	argv[argc++] = py_script;
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--script";
	argv[argc++] = script_path;
	argv[argc++] = "--record";
	argv[argc++] = h->record_path;
	argv[argc++] = "--port-file";
	argv[argc++] = port_path;
	if (cert) {
		argv[argc++] = "--cert";
		argv[argc++] = cert;
	}
	if (key) {
		argv[argc++] = "--key";
		argv[argc++] = key;
	}
	if (lifetime_s > 0) {
		snprintf(lifetime, sizeof lifetime, "%d", lifetime_s);
		argv[argc++] = "--lifetime";
		argv[argc++] = lifetime;
	}
	/* The child gets the read end of `done` as fd 3 and the write end of
	 * `notify` as fd 4; our ends stay close-on-exec, so that no other
	 * child (the second server of a pair, dnsmasq) keeps them open. */
	argv[argc++] = "--done-fd";
	argv[argc++] = "3";
	argv[argc++] = "--notify-fd";
	argv[argc++] = "4";
	argv[argc] = NULL;
	if (pipe(done) != 0 || pipe(notify) != 0)
		goto fail_pipes;
	for (n = 0; n < 2; n++) {
		fcntl(done[n], F_SETFD, FD_CLOEXEC);
		fcntl(notify[n], F_SETFD, FD_CLOEXEC);
	}
	fcntl(notify[0], F_SETFL, O_NONBLOCK);

	/* Everything the child needs is prepared before fork: between fork and
	 * exec it only calls async-signal-safe functions. */
	max_fd = sysconf(_SC_OPEN_MAX);
	if (max_fd < 3 || max_fd > 65536)
		max_fd = 65536;
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0)
		goto fail_pipes;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(devnull);
		goto fail_pipes;
	}
	if (pid == 0) {
		/* Above 4 first: dup2 onto 3 and 4 must not clobber the other. */
		int d = fcntl(done[0], F_DUPFD, 10), w = fcntl(notify[1], F_DUPFD, 10);
		if (d < 0 || w < 0 || dup2(devnull, 0) < 0 || dup2(d, 3) < 0 || dup2(w, 4) < 0)
			_exit(127);
		close_from(5, max_fd);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(devnull);
	close(done[0]);
	close(notify[1]);
	h->done_fd = done[1];
	h->notify_fd = notify[0];
	h->pid = (int)pid;

	for (end = now_ms() + START_WAIT_MS;;) {
		char *txt = read_file(port_path, NULL);
		if (txt) {
			char *pend;
			long port = strtol(txt, &pend, 10);
			int ok = pend != txt && port > 0 && port < 65536;
			free(txt);
			if (ok) {
				h->port = (int)port;
				return 0;
			}
		}
		if (wait_child(pid, 0, NULL)) { /* died before listening */
			h->pid = 0;
			goto fail;
		}
		if (now_ms() >= end)
			goto fail;
		nap(&h->notify_fd, 10);
	}
fail_pipes:
	for (n = 0; n < 2; n++) {
		close_fd(&done[n]);
		close_fd(&notify[n]);
	}
fail:
	close_fd(&h->done_fd);
	if (h->pid > 0)
		stop_child((pid_t)h->pid, &h->notify_fd);
	close_fd(&h->notify_fd);
	remove_dir(h->dir);
	memset(h, 0, sizeof *h);
	h->done_fd = h->notify_fd = -1;
	return -1;
}

void hostile_client_done(hostile *h)
{
	if (h && h->dir[0])
		close_fd(&h->done_fd);
}

char *hostile_finish(hostile *h, int timeout_s)
{
	char *rec = NULL;

	if (!h || !h->dir[0])
		return NULL;
	hostile_client_done(h);
	if (h->pid > 0) {
		long ms = timeout_s > 0 ? (long)timeout_s * 1000 : 0;
		if (!wait_child((pid_t)h->pid, ms, &h->notify_fd))
			stop_child((pid_t)h->pid, &h->notify_fd);
		h->pid = 0;
	}
	close_fd(&h->notify_fd);
	if (h->record_path[0])
		rec = read_file(h->record_path, NULL);
	remove_dir(h->dir);
	h->dir[0] = '\0';
	h->record_path[0] = '\0';
	return rec;
}

/* ---- a small JSON reader for the record --------------------------------- */

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* p at '"': pointer after the closing quote, NULL when unterminated. */
static const char *skip_string(const char *p)
{
	for (p++; *p; p++) {
		if (*p == '\\') {
			if (!p[1])
				return NULL;
			p++;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

static const char *skip_value(const char *p, int depth)
{
	p = ws(p);
	if (depth > MAX_DEPTH)
		return NULL;
	if (*p == '"')
		return skip_string(p);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		p = ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				if (*p != '"' || !(p = skip_string(p)))
					return NULL;
				p = ws(p);
				if (*p != ':')
					return NULL;
				p++;
			}
			if (!(p = skip_value(p, depth + 1)))
				return NULL;
			p = ws(p);
			if (*p == close)
				return p + 1;
			if (*p != ',')
				return NULL;
			p = ws(p + 1);
		}
	}
	if (!*p)
		return NULL;
	{
		const char *s = p;
		while (*p && (strchr("+-.0123456789eE", *p) || (*p >= 'a' && *p <= 'z')))
			p++;
		return p == s ? NULL : p;
	}
}

/* p at '{': the value of `key` (whitespace skipped), or NULL.  Keys with
 * escapes never match (the record's keys have none). */
static const char *obj_get(const char *p, const char *key)
{
	size_t klen = strlen(key);

	if (!p || *(p = ws(p)) != '{')
		return NULL;
	p = ws(p + 1);
	if (*p == '}')
		return NULL;
	for (int i = 0; i < 100000; i++) {
		const char *k = p, *end;
		int match;
		if (*p != '"' || !(end = skip_string(p)))
			return NULL;
		match = (size_t)(end - k) == klen + 2 && !memcmp(k + 1, key, klen);
		p = ws(end);
		if (*p != ':')
			return NULL;
		p = ws(p + 1);
		if (match)
			return p;
		if (!(p = skip_value(p, 1)))
			return NULL;
		p = ws(p);
		if (*p != ',')
			return NULL;
		p = ws(p + 1);
	}
	return NULL;
}

/* p at '[': element idx, or NULL. */
static const char *arr_get(const char *p, int idx)
{
	if (!p || *(p = ws(p)) != '[' || idx < 0)
		return NULL;
	p = ws(p + 1);
	if (*p == ']')
		return NULL;
	for (int i = 0;; i++) {
		if (i == idx)
			return p;
		if (!(p = skip_value(p, 1)))
			return NULL;
		p = ws(p);
		if (*p != ',')
			return NULL;
		p = ws(p + 1);
	}
}

static int arr_len(const char *p)
{
	int n = 0;
	if (!p || *(p = ws(p)) != '[')
		return -1;
	p = ws(p + 1);
	if (*p == ']')
		return 0;
	for (;;) {
		if (!(p = skip_value(p, 1)))
			return -1;
		n++;
		p = ws(p);
		if (*p == ']')
			return n;
		if (*p != ',')
			return -1;
		p = ws(p + 1);
	}
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* p at '"': the decoded bytes, malloc'd and NUL-terminated.  \u00XX..\u00FF
 * give the single byte XX (the record stores bytes as latin-1); code points
 * above U+00FF (never written by the server for byte strings) give UTF-8. */
static char *decode_string(const char *p, size_t *len_out)
{
	const char *end;
	char *out, *o;

	if (!p || *(p = ws(p)) != '"' || !(end = skip_string(p)))
		return NULL;
	/* Every escape decodes to no more bytes than it occupies. */
	out = malloc((size_t)(end - p));
	if (!out)
		return NULL;
	o = out;
	for (p++; p < end - 1; p++) {
		unsigned cp;
		if (*p != '\\') {
			*o++ = *p;
			continue;
		}
		p++;
		switch (*p) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (hex4(p + 1, &cp))
				goto bad;
			p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF && p[1] == '\\' && p[2] == 'u') {
				unsigned lo;
				if (!hex4(p + 3, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					p += 6;
				}
			}
			if (cp <= 0xFF) {
				*o++ = (char)(unsigned char)cp;
			} else if (cp <= 0x7FF) {
				*o++ = (char)(0xC0 | (cp >> 6));
				*o++ = (char)(0x80 | (cp & 0x3F));
			} else if (cp <= 0xFFFF) {
				*o++ = (char)(0xE0 | (cp >> 12));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*o++ = (char)(0x80 | (cp & 0x3F));
			} else {
				*o++ = (char)(0xF0 | (cp >> 18));
				*o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
				*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*o++ = (char)(0x80 | (cp & 0x3F));
			}
			break;
		default:
			goto bad;
		}
	}
	*o = '\0';
	if (len_out)
		*len_out = (size_t)(o - out);
	return out;
bad:
	free(out);
	return NULL;
}

static const char *conn_value(const char *record, int conn, const char *key)
{
	if (!record || !key)
		return NULL;
	return obj_get(arr_get(obj_get(record, "connections"), conn), key);
}

char *hostile_field(const char *record, int conn, const char *field, size_t *len)
{
	return decode_string(conn_value(record, conn, field), len);
}

char *hostile_item(const char *record, int conn, const char *array, int idx, size_t *len)
{
	return decode_string(arr_get(conn_value(record, conn, array), idx), len);
}

int hostile_count(const char *record, int conn, const char *array)
{
	return arr_len(conn_value(record, conn, array));
}

int hostile_count_connections(const char *record)
{
	return record ? arr_len(obj_get(record, "connections")) : -1;
}

int hostile_has_event(const char *record, int conn, const char *prefix)
{
	int first = conn, last = conn;
	size_t plen;

	if (!record || !prefix)
		return 0;
	plen = strlen(prefix);
	if (conn < 0) {
		first = 0;
		last = hostile_count_connections(record) - 1;
	}
	for (int c = first; c <= last; c++) {
		const char *events = conn_value(record, c, "events");
		int n = arr_len(events);
		for (int i = 0; i < n; i++) {
			size_t len;
			char *e = decode_string(arr_get(events, i), &len);
			int hit = e && len >= plen && !memcmp(e, prefix, plen);
			free(e);
			if (hit)
				return 1;
		}
	}
	return 0;
}

int hostile_top_int(const char *record, const char *key)
{
	const char *v;
	char *end;
	long n;

	if (!record || !key || !(v = obj_get(record, key)))
		return -1;
	if (!strncmp(v, "true", 4))
		return 1;
	if (!strncmp(v, "false", 5))
		return 0;
	n = strtol(v, &end, 10);
	if (end == v || n < 0 || n > 1000000)
		return -1;
	return (int)n;
}

int hostile_unexpected(const char *record)
{
	return hostile_top_int(record, "unexpected_connections");
}
