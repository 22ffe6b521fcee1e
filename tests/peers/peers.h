/*
 * peers.h - helpers shared by the tests against real peers (Postfix and
 * dnsmasq, started by tests/peers/peers.py, which exports their addresses in
 * the environment): the environment, unique recipients, Postfix's maildir
 * and the SMTP sessions in Postfix's log.
 */
#ifndef TM_TESTS_PEERS_H
#define TM_TESTS_PEERS_H

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <tlsmail.h>

/* An environment variable the harness must have set. */
static inline const char *need_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "environment variable %s is not set: run through tests/peers/peers.py\n",
                name);
        exit(1);
    }
    return v;
}

/* A context for the peers: their CA, their DNS server and SMTP port. */
static inline int peers_context_new(tm_context **out, unsigned int command_timeout_ms)
{
    tm_context_options o;

    *out = NULL;
    if (tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION) != TM_OK)
        return -1;
    o.ca_file = need_env("TM_TEST_CA");
    o.dns_server = need_env("TM_TEST_DNS");
    o.port = (unsigned int)atoi(need_env("TM_TEST_PORT"));
    o.helo_name = "client.tm.test";
    o.command_timeout_ms = command_timeout_ms;
    return tm_context_new(out, &o) == TM_OK ? 0 : -1;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* A fresh status (the caller's struct version set, the rest empty). */
#define PEERS_STATUS(st) assert_int_equal(tm_status_init(&(st), TM_STATUS_VERSION), TM_OK)

/* A recipient local part unique to this process and call. */
static inline void unique_local(char *buf, size_t size, const char *prefix)
{
    static unsigned int counter;
    snprintf(buf, size, "%s%ld-%u", prefix, (long)getpid(), ++counter);
}

/* Waits up to timeout_ms for the nth (1-based) message in the maildir of
 * local@domain; returns its content (malloc'd) or NULL. */
static inline char *maildir_wait(const char *domain, const char *local, int nth, long timeout_ms)
{
    char dir[1024];
    long waited = 0;

    snprintf(dir, sizeof dir, "%s/%.255s/%.255s/new", need_env("TM_TEST_MAILDIR"), domain, local);
    for (;;) {
        DIR *d = opendir(dir);
        int count = 0;
        char names[64][256];

        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL && count < 64) {
                if (e->d_name[0] == '.')
                    continue;
                snprintf(names[count++], sizeof names[0], "%s", e->d_name);
            }
            closedir(d);
        }
        if (count >= nth) {
            /* Maildir names start with the delivery time: sort to order. */
            int i, j;
            char path[1400];
            FILE *f;
            char *buf;
            long len;

            for (i = 1; i < count; i++)
                for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
                    char t[256];
                    memcpy(t, names[j], sizeof t);
                    memcpy(names[j], names[j - 1], sizeof t);
                    memcpy(names[j - 1], t, sizeof t);
                }
            snprintf(path, sizeof path, "%.1023s/%.255s", dir, names[nth - 1]);
            f = fopen(path, "rb");
            if (!f)
                return NULL;
            fseek(f, 0, SEEK_END);
            len = ftell(f);
            fseek(f, 0, SEEK_SET);
            buf = malloc((size_t)len + 1);
            if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
                free(buf);
                buf = NULL;
            }
            if (buf)
                buf[len] = '\0';
            fclose(f);
            return buf;
        }
        if (waited >= timeout_ms)
            return NULL;
        sleep_ms(50);
        waited += 50;
    }
}

/* Number of messages in the maildir of local@domain right now. */
static inline int maildir_count(const char *domain, const char *local)
{
    char dir[1024];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(dir, sizeof dir, "%s/%.255s/%.255s/new", need_env("TM_TEST_MAILDIR"), domain, local);
    d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* True when s ends with suffix. */
static inline int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* ---------------------------------------------------------------------- */
/* Postfix's log: one "connect from" and one "disconnect from ... mail=1
 * ... starttls=1 ..." line per SMTP session (Postfix 3 logs the commands
 * of the session in the disconnect line).  Each listener logs as
 * postfix/<its host name>/smtpd. */

typedef struct sessions {
    int connects, disconnects;
    int mail_plain; /* sessions that sent MAIL without STARTTLS */
    int mail_tls;   /* sessions that sent MAIL after STARTTLS */
    int mail_any;
} sessions;

/* The size of Postfix's log now: where the next sessions will start. */
static inline long log_size(void)
{
    struct stat sb;
    if (stat(need_env("TM_TEST_POSTFIX_LOG"), &sb) != 0)
        return 0;
    return (long)sb.st_size;
}

/* The sessions logged since `from`, of every listener (host NULL) or of
 * the one of `host`. */
static inline sessions log_scan(long from, const char *host)
{
    sessions s = { 0, 0, 0, 0, 0 };
    FILE *f = fopen(need_env("TM_TEST_POSTFIX_LOG"), "r");
    char line[4096], tag[300];

    if (!f)
        return s;
    if (fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return s;
    }
    snprintf(tag, sizeof tag, "postfix/%s/smtpd[", host ? host : "");
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, host ? tag : "/smtpd["))
            continue;
        if (strstr(line, "]: connect from ")) {
            s.connects++;
        } else if (strstr(line, "]: disconnect from ")) {
            s.disconnects++;
            if (strstr(line, " mail=")) {
                s.mail_any++;
                if (strstr(line, " starttls=1"))
                    s.mail_tls++;
                else
                    s.mail_plain++;
            }
        }
    }
    fclose(f);
    return s;
}

/* The sessions since `from`, once Postfix has logged them: at least
 * min_connects sessions (the connections the client made) and min_mail
 * with MAIL (a delivered message), each connect with its disconnect, and
 * then nothing new for 50 ms (bounded: 10 s in all).  Postfix logs a
 * session's connect before its greeting, and postlogd writes in the order
 * it receives, so the conditions are met by a correct library's sessions
 * alone; the 50 ms only give a stray extra session a chance to show (a
 * suite's last case counts every session of the run again). */
static inline sessions log_sessions(long from, int min_connects, int min_mail)
{
    sessions s = log_scan(from, NULL);
    long waited = 0;

    while (waited < 10000) {
        if (s.connects == s.disconnects && s.connects >= min_connects &&
            s.mail_any >= min_mail) {
            sessions again;
            sleep_ms(50);
            waited += 50;
            again = log_scan(from, NULL);
            if (memcmp(&again, &s, sizeof s) == 0)
                break;
            s = again;
            continue;
        }
        sleep_ms(20);
        waited += 20;
        s = log_scan(from, NULL);
    }
    return s;
}

#endif
