/*
 * What tm-send.c (the tm-send command line, the options every mode shares)
 * and mta.c (the sendmail drop-in: sendmail mode, the queue, bounces) share.
 */
#ifndef TM_SEND_H
#define TM_SEND_H

#include <getopt.h>
#include <stdio.h>

#include <tlsmail.h>

/* sysexits.h's values, spelled out so the program needs no BSD header. */
#define EX_OK_ 0
#define EX_USAGE_ 64
#define EX_NOINPUT_ 66
#define EX_UNAVAILABLE_ 69
#define EX_SOFTWARE_ 70
#define EX_TEMPFAIL_ 75
#define EX_CONFIG_ 78

enum { O_MX = 256, O_PORT, O_DNS, O_REQ, O_SKIP, O_KEEP, O_NO_REQ, O_NO_SKIP, O_NO_KEEP, O_CA,
       O_HELO, O_TIMEOUT, O_JSON, O_VERBOSE, O_VERSION, O_HELP, O_SETTINGS, O_SENDING,
       O_DNSSEC, O_TRUST, O_NO_DANE, O_FLOOR, O_NO_STS, O_STS_CACHE, O_STS_ADDR,
       O_STS_PORT,
       /* sendmail mode only (after O_SENDMAIL_FIRST in longopts) */
       O_QUEUE, O_NO_QUEUE, O_FLUSH, O_FLUSH_DUE, O_LIST, O_RELEASE, O_BOUNCE, O_CONFIG,
       O_SENDMAIL };

/* tm-send's long options; the sendmail-mode ones follow the common ones
 * from index SENDMAIL_OPTS_FROM on (2: --from and --to are not taken in
 * sendmail mode, where -f and -t mean something else). */
extern const struct option tm_longopts[];
#define SENDMAIL_OPTS_FROM 2

/* What tm-send's and sendmail mode's common options set. */
struct conf {
    tm_context_options co;
    tm_session_options so;
    tm_policy policy;
    int floor, json;
    const char *settings, *sending, *sts_cache;
    char *mx;
};

void conf_init(struct conf *c);

/* A common option (opt from tm_longopts, its value in arg): 0 taken, 1 not
 * one of them, -1 a bad value (said on standard error). */
int common_option(int opt, char *arg, struct conf *c);

/* The context with --settings and the MTA-STS cache loaded: EX_OK_ or the
 * exit status (said). */
int open_context(struct conf *c, tm_context **ctx);

/* --floor for the domain of addr: EX_OK_ or EX_USAGE_ (said). */
int set_floor(tm_context *ctx, int floor, const char *addr);

/* Saves --sts-cache, if given (a failure is said, not fatal). */
void save_sts_cache(tm_context *ctx, const struct conf *c);

/* The exit status of a tm_result: 0, 69 or 75. */
int exit_code(int result);

void log_stderr(void *arg, int level, const char *msg);

/* Whether tm-send runs as a sendmail drop-in: called "sendmail" (any
 * directory), "--sendmail" as its first argument, or a queue command
 * (--flush, --flush-due, --list, --release) as its first argument. */
int is_sendmail(int argc, char **argv);

/* sendmail mode (mta.c): the exit status. */
int sendmail_main(int argc, char **argv, struct conf *c);

#endif
