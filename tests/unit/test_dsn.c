/*
 * test_dsn.c - tm-send's bounces (examples/dsn.c): the multipart/report
 * and its exact fields, the Status table, the Diagnostic-Code forms,
 * hostile server texts, the returned header section, the refusal of a
 * null sender; and the mbox append (From_ line, >From quoting, appends,
 * symbolic links and other files refused, the lock, a mailbox replaced
 * while the append waited).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dsn.h"

static const char original[] = "From: alice@example.org\n"
                               "To: bob@example.com\n"
                               "Subject: hello\n"
                               "\n"
                               "body line\n"
                               "To: not-a-header@example.com\n";

static dsn_info info_for(const char *msg, size_t len)
{
    dsn_info i;

    memset(&i, 0, sizeof i);
    i.reporting_mta = "mx.example.net";
    i.sender = "alice@example.org";
    i.arrival = 1700000000; /* Tue, 14 Nov 2023 22:13:20 +0000 */
    i.now = 1700003600;
    i.msg = msg;
    i.len = len;
    return i;
}

/* (The results go into the caller's variables: gcc -O3 takes a pointer
 * returned from a local whose address was passed on for dangling.) */
static void build(const dsn_info *info, const dsn_rcpt *r, size_t n, char **out, size_t *len)
{
    *out = NULL;
    assert_int_equal(dsn_build(info, r, n, out, len), 0);
    assert_non_null(*out);
    assert_int_equal(strlen(*out), *len);
}

/* 7-bit, no NUL, every line ended by CRLF (no bare CR or LF) and shorter
 * than 998 octets. */
static void check_wire(const char *m, size_t len)
{
    size_t i, line = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)m[i];
        assert_true(c != 0 && c < 128);
        if (c == '\r') {
            assert_true(i + 1 < len && m[i + 1] == '\n');
            assert_true(line < 998);
            line = 0;
            i++;
            continue;
        }
        assert_true(c != '\n');
        line++;
    }
    assert_int_equal(line, 0);
}

/* A heap copy of [s, e). */
static char *dup_range(const char *s, const char *e)
{
    char *d = malloc((size_t)(e - s) + 1);

    assert_non_null(d);
    memcpy(d, s, (size_t)(e - s));
    d[e - s] = '\0';
    return d;
}

static char *boundary_of(const char *m)
{
    const char *b = strstr(m, "; boundary=\""), *e;

    assert_non_null(b);
    b += 12;
    e = strchr(b, '"');
    assert_non_null(e);
    assert_true(e - b >= 20);
    return dup_range(b, e);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

/* Part k (0, 1, 2) of the report, its header and its content apart. */
static void part(const char *m, int k, char **head, char **body)
{
    char *b = boundary_of(m), delim[128], end[128];
    const char *p = m, *q, *sep;
    int i;

    snprintf(delim, sizeof delim, "\r\n--%s\r\n", b);
    snprintf(end, sizeof end, "\r\n--%s", b);
    for (i = 0; i <= k; i++) {
        p = strstr(p, delim);
        assert_non_null(p);
        p += strlen(delim);
    }
    q = strstr(p, end);
    assert_non_null(q);
    sep = strstr(p, "\r\n\r\n");
    assert_non_null(sep);
    assert_true(sep <= q);
    *head = dup_range(p, sep + 2);
    *body = sep + 4 <= q ? dup_range(sep + 4, q) : dup_range(q, q);
    free(b);
}

static void structure(void **state)
{
    dsn_info info = info_for(original, strlen(original));
    dsn_rcpt r[2] = {
        {"bob@example.com", 550, "5.1.1", "5.1.1 <bob@example.com>: User unknown",
         "mx1.example.com", 0},
        {"carol@example.net", 451, "4.7.1", "4.7.1 greylisted", "mx.example.net", 1},
    };
    size_t len, len2;
    char *m, *m2, *b, *b2, *head, *body, expect[1024], id[64];
    const char *hdr_end, *msgid;
    unsigned hexlen = 0;
    (void)state;

    build(&info, r, 2, &m, &len);
    build(&info, r, 2, &m2, &len2);
    b = boundary_of(m);
    b2 = boundary_of(m2);
    hdr_end = strstr(m, "\r\n\r\n");

    check_wire(m, len);
    /* the header section, field by field */
    assert_non_null(hdr_end);
    snprintf(expect, sizeof expect,
             "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
             "To: <alice@example.org>\r\n"
             "Subject: Undelivered Mail Returned to Sender\r\n"
             "Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n"
             "Message-ID: <");
    assert_memory_equal(m, expect, strlen(expect));
    msgid = m + strlen(expect);
    assert_int_equal(sscanf(msgid, "1700003600.%63[0-9a-f]@mx.example.net>%n", id, &hexlen), 1);
    assert_int_equal(strlen(id), 16);
    assert_true(hexlen > 0);
    snprintf(expect, sizeof expect,
             "\r\nAuto-Submitted: auto-replied\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: multipart/report; report-type=delivery-status; boundary=\"%s\"\r\n"
             "Content-Transfer-Encoding: 7bit\r\n\r\n",
             b);
    assert_memory_equal(msgid + hexlen, expect, strlen(expect));
    assert_ptr_equal(msgid + hexlen + strlen(expect), hdr_end + 4);

    /* the boundary: unique per message, and only in the parameter and the
     * four delimiter lines */
    assert_string_not_equal(b, b2);
    assert_memory_not_equal(strstr(m, "Message-ID:"), strstr(m2, "Message-ID:"), 40);
    assert_int_equal(count(m, b), 5);
    snprintf(expect, sizeof expect, "\r\n--%s--\r\n", b);
    assert_string_equal(m + len - strlen(expect), expect);

    /* part 1: the explanation */
    part(m, 0, &head, &body);
    assert_string_equal(head, "Content-Type: text/plain; charset=us-ascii\r\n"
                              "Content-Description: Notification\r\n");
    assert_non_null(strstr(body, "This is the mail system at host mx.example.net.\r\n"));
    assert_non_null(strstr(body, "\r\n<bob@example.com>\r\n"
                                 "    host mx1.example.com said: 550 5.1.1 <bob@example.com>: "
                                 "User unknown\r\n"));
    assert_non_null(strstr(body, "\r\n<carol@example.net>\r\n"
                                 "    given up after the queue's lifetime; last attempt: "
                                 "host mx.example.net said: 451 4.7.1 greylisted\r\n"));
    free(head);
    free(body);

    /* part 2: the report, exactly */
    part(m, 1, &head, &body);
    assert_string_equal(head, "Content-Type: message/delivery-status\r\n"
                              "Content-Description: Delivery report\r\n");
    assert_string_equal(body, "Reporting-MTA: dns; mx.example.net\r\n"
                              "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                              "\r\n"
                              "Final-Recipient: rfc822; bob@example.com\r\n"
                              "Action: failed\r\n"
                              "Status: 5.1.1\r\n"
                              "Remote-MTA: dns; mx1.example.com\r\n"
                              "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: User unknown\r\n"
                              "\r\n"
                              "Final-Recipient: rfc822; carol@example.net\r\n"
                              "Action: failed\r\n"
                              "Status: 4.7.1\r\n"
                              "Remote-MTA: dns; mx.example.net\r\n"
                              "Diagnostic-Code: smtp; 451 4.7.1 greylisted\r\n");
    free(head);
    free(body);

    /* part 3: the header section only, CRLF */
    part(m, 2, &head, &body);
    assert_string_equal(head, "Content-Type: text/rfc822-headers\r\n"
                              "Content-Description: Undelivered message headers\r\n");
    assert_string_equal(body, "From: alice@example.org\r\n"
                              "To: bob@example.com\r\n"
                              "Subject: hello\r\n");
    free(head);
    free(body);

    /* no arrival time, no Arrival-Date */
    info.arrival = 0;
    free(m);
    build(&info, r, 1, &m, &len);
    assert_null(strstr(m, "Arrival-Date"));
    assert_non_null(strstr(m, "\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient:"));
    free(m);
    free(m2);
    free(b);
    free(b2);
}

static void status_table(void **state)
{
    static const struct {
        int code;
        const char *enhanced;
        int expired;
        const char *status;
    } t[] = {
        {550, "5.1.1", 0, "5.1.1"},
        {550, "5.7.26", 0, "5.7.26"},
        {552, "5.123.999", 0, "5.123.999"},
        {550, NULL, 0, "5.0.0"},
        {554, "", 0, "5.0.0"},
        {451, "4.7.1", 0, "4.7.1"},
        {421, NULL, 0, "4.0.0"},
        {450, "", 0, "4.0.0"},
        {0, NULL, 0, "5.0.0"},
        {0, "", 0, "5.0.0"},
        /* expired: 4.4.7 unless a usable enhanced code says otherwise */
        {451, NULL, 1, "4.4.7"},
        {0, NULL, 1, "4.4.7"},
        {451, "4.2.2", 1, "4.2.2"},
        {550, "5.1.1", 1, "5.1.1"},
        {451, "2.0.0", 1, "4.4.7"},
        /* not class.subject.detail of class 4 or 5 */
        {550, "2.0.0", 0, "5.0.0"},
        {550, "3.1.1", 0, "5.0.0"},
        {550, "5.1", 0, "5.0.0"},
        {550, "5.1.1.1", 0, "5.0.0"},
        {550, "5.1234.1", 0, "5.0.0"},
        {550, "5.1.1234", 0, "5.0.0"},
        {550, "5..1", 0, "5.0.0"},
        {550, "5.1.", 0, "5.0.0"},
        {550, "5.a.1", 0, "5.0.0"},
        {550, " 5.1.1", 0, "5.0.0"},
        {550, "5.1.1 ", 0, "5.0.0"},
        {451, "45.1.1", 0, "4.0.0"},
        {451, "x", 1, "4.4.7"},
        /* a code out of the 4xx and 5xx ranges is no success either */
        {250, NULL, 0, "5.0.0"},
        {999, NULL, 0, "5.0.0"},
    };
    dsn_info info = info_for(original, strlen(original));
    size_t i;
    (void)state;

    for (i = 0; i < sizeof t / sizeof *t; i++) {
        dsn_rcpt r = {"x@example.com", t[i].code, t[i].enhanced, "text", NULL, t[i].expired};
        char st[16], want[64], *m;
        size_t len;
        dsn_status(&r, st, sizeof st);
        if (strcmp(st, t[i].status) != 0)
            fail_msg("row %zu (%d, %s, %d): %s, not %s", i, t[i].code,
                     t[i].enhanced ? t[i].enhanced : "NULL", t[i].expired, st, t[i].status);
        /* and the same in the report */
        build(&info, &r, 1, &m, &len);
        snprintf(want, sizeof want, "\r\nStatus: %s\r\n", t[i].status);
        assert_non_null(strstr(m, want));
        free(m);
    }
}

/* The report part of a one-recipient DSN, into *body. */
static void report_of(const dsn_rcpt *r, char **body)
{
    dsn_info info = info_for(original, strlen(original));
    size_t len;
    char *m, *head;

    build(&info, r, 1, &m, &len);
    check_wire(m, len);
    part(m, 1, &head, body);
    free(head);
    free(m);
}

static void diagnostic_code(void **state)
{
    dsn_rcpt with_reply = {"a@example.com", 550, NULL, "no such user", "mx.example.com", 0};
    dsn_rcpt code_only = {"a@example.com", 421, "", "", "mx.example.com", 0};
    dsn_rcpt local = {"a@example.com", 0, NULL, "no MX answered", "", 1};
    dsn_rcpt nothing = {"a@example.com", 0, NULL, NULL, NULL, 0};
    char *b;
    (void)state;

    report_of(&with_reply, &b);
    assert_string_equal(strstr(b, "\r\n\r\n") + 4,
                        "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\n"
                        "Status: 5.0.0\r\nRemote-MTA: dns; mx.example.com\r\n"
                        "Diagnostic-Code: smtp; 550 no such user\r\n");
    free(b);
    report_of(&code_only, &b);
    assert_non_null(strstr(b, "\r\nDiagnostic-Code: smtp; 421\r\n"));
    free(b);
    report_of(&local, &b);
    assert_string_equal(strstr(b, "\r\n\r\n") + 4,
                        "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\n"
                        "Status: 4.4.7\r\nDiagnostic-Code: X-tlsmail; no MX answered\r\n");
    free(b);
    report_of(&nothing, &b);
    assert_string_equal(strstr(b, "\r\n\r\n") + 4,
                        "Final-Recipient: rfc822; a@example.com\r\nAction: failed\r\n"
                        "Status: 5.0.0\r\n");
    free(b);
}

static void hostile_texts(void **state)
{
    char long_text[2001], long_addr[1001];
    dsn_rcpt r[2];
    dsn_info info = info_for(original, strlen(original));
    char *m, *head, *body, *b, want[600];
    const char *d;
    size_t len;
    (void)state;

    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    memset(long_addr, 'a', sizeof long_addr - 1);
    long_addr[sizeof long_addr - 1] = '\0';
    long_addr[500] = '@';
    memset(r, 0, sizeof r);
    r[0].address = "ev\r\nil@exam\xffple.com";
    r[0].code = 550;
    r[0].text = "5.1.1 bad\r\nX-Injected: yes\rmore\x1b[31m\xc3\xa9\tend";
    r[0].remote_mta = "mx\r\n.example.com";
    r[1].address = long_addr;
    r[1].code = 550;
    r[1].text = long_text;
    r[1].remote_mta = long_addr;
    build(&info, r, 2, &m, &len);
    check_wire(m, len);
    assert_null(strstr(m, "\r\nX-Injected"));
    part(m, 1, &head, &body);
    assert_non_null(strstr(body, "\r\nFinal-Recipient: rfc822; ev??il@exam?ple.com\r\n"));
    assert_non_null(strstr(body, "\r\nRemote-MTA: dns; mx??.example.com\r\n"));
    assert_non_null(
        strstr(body, "\r\nDiagnostic-Code: smtp; 550 5.1.1 bad  X-Injected: yes more?[31m?? end\r\n"));
    /* cut at 400 characters, the cut marked */
    d = strstr(body, "\r\nDiagnostic-Code: smtp; 550 xxx");
    assert_non_null(d);
    snprintf(want, sizeof want, "\r\nDiagnostic-Code: smtp; 550 %.400s...\r\n", long_text);
    assert_memory_equal(d, want, strlen(want));
    snprintf(want, sizeof want, "\r\nFinal-Recipient: rfc822; %.256s...\r\n", long_addr);
    assert_non_null(strstr(body, want));
    free(head);
    free(body);
    free(m);

    /* a server text (or an original header) that holds what looks like a
     * boundary cannot end a part */
    r[0].text = "--=_tlsmail_";
    info.msg = "Subject: --=_tlsmail_0123\r\n\r\n";
    info.len = strlen(info.msg);
    build(&info, r, 1, &m, &len);
    b = boundary_of(m);
    assert_int_equal(count(m, b), 5);
    free(b);
    free(m);

    /* hostile names of this host and the sender stay in their place */
    info.reporting_mta = "host\r\nBcc: x@y <z>";
    info.sender = "a@b>\r\nCc: c@d";
    build(&info, r, 1, &m, &len);
    check_wire(m, len);
    assert_non_null(strstr(m, "From: Mail Delivery System <MAILER-DAEMON@host--Bcc--x-y--z->\r\n"));
    assert_non_null(strstr(m, "\r\nTo: <a@b???Cc:?c@d>\r\n"));
    assert_null(strstr(m, "\r\nBcc"));
    assert_null(strstr(m, "\r\nCc"));
    free(m);
}

/* The returned header section of msg, into *body. */
static void returned(const char *msg, size_t mlen, char **body)
{
    dsn_info info = info_for(msg, mlen);
    dsn_rcpt r = {"a@example.com", 550, "5.1.1", "no", NULL, 0};
    size_t len;
    char *m, *head;

    build(&info, &r, 1, &m, &len);
    check_wire(m, len);
    part(m, 2, &head, body);
    free(head);
    free(m);
}

static void header_section(void **state)
{
    static const char crlf[] = "Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                               "Subject: s\r\n\r\nbody\r\nX: no\r\n";
    static const char no_blank[] = "From: a@example.org\nSubject: no body\n"
                                   "this is no header\nTo: x@example.org\n";
    static const char no_blank_all[] = "From: a@example.org\nSubject: last, no line end";
    static const char odd[] = "Subject: caf\xc3\xa9\r\nX-Nul: a\0b\r\nX-Cr: c\rd\r\n\r\n";
    static const char body_only[] = "\nhello\n";
    char *b, *big, *p;
    size_t i, n;
    (void)state;

    returned(original, strlen(original), &b);
    assert_string_equal(b, "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hello\r\n");
    free(b);
    returned(crlf, strlen(crlf), &b);
    assert_string_equal(b, "Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                           "Subject: s\r\n");
    free(b);
    returned(no_blank, strlen(no_blank), &b);
    assert_string_equal(b, "From: a@example.org\r\nSubject: no body\r\n");
    free(b);
    returned(no_blank_all, strlen(no_blank_all), &b);
    assert_string_equal(b, "From: a@example.org\r\nSubject: last, no line end\r\n");
    free(b);
    /* 8-bit and NUL replaced; a bare CR ends a line (as it will on the
     * wire), so "d" is no header: the section was up to the empty line */
    returned(odd, sizeof odd - 1, &b);
    assert_string_equal(b, "Subject: caf??\r\nX-Nul: a?b\r\nX-Cr: c\r\nd\r\n");
    free(b);
    returned(body_only, strlen(body_only), &b);
    assert_string_equal(b, "");
    free(b);
    returned("", 0, &b);
    assert_string_equal(b, "");
    free(b);

    /* a 3000-octet field is folded before 998 octets */
    big = malloc(4000);
    assert_non_null(big);
    n = (size_t)snprintf(big, 4000, "X-Long: ");
    memset(big + n, 'y', 3000);
    memcpy(big + n + 3000, "\nSubject: s\n\nbody", 18);
    returned(big, strlen(big), &b);
    assert_int_equal(count(b, "\r\n "), 3);
    assert_non_null(strstr(b, "\r\nSubject: s\r\n"));
    for (i = 0, p = b; *p; p++)
        i += *p == 'y';
    assert_int_equal(i, 3000);
    free(b);
    free(big);

    /* at most 64 KiB of it: 2000 fields of 100 octets */
    big = malloc(2000 * 100 + 16);
    assert_non_null(big);
    for (i = 0; i < 2000; i++) {
        snprintf(big + i * 100, 101, "X-F%04zu: %090zu\n", i, i);
        assert_int_equal(strlen(big + i * 100), 100);
    }
    strcpy(big + 2000 * 100, "\nbody\n");
    returned(big, strlen(big), &b);
    n = strlen(b);
    assert_true(n <= 65536 && n > 65536 - 200);
    assert_memory_equal(b, "X-F0000: ", 9);
    assert_string_equal(b + n - 2, "\r\n"); /* cut at a line end */
    free(b);
    free(big);
}

static void refusals(void **state)
{
    dsn_info info = info_for(original, strlen(original));
    dsn_rcpt r = {"a@example.com", 550, "5.1.1", "no", NULL, 0};
    char *out = (char *)"untouched";
    size_t len = 7;
    (void)state;

    info.sender = "";
    errno = 0;
    assert_int_equal(dsn_build(&info, &r, 1, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    info.sender = "<>";
    errno = 0;
    assert_int_equal(dsn_build(&info, &r, 1, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    info.sender = NULL;
    errno = 0;
    assert_int_equal(dsn_build(&info, &r, 1, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    info.sender = "alice@example.org";
    errno = 0;
    assert_int_equal(dsn_build(&info, &r, 0, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    info.reporting_mta = "";
    errno = 0;
    assert_int_equal(dsn_build(&info, &r, 1, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    assert_string_equal(out, "untouched");
    assert_int_equal(len, 7);
}

/* --- mbox ----------------------------------------------------------------- */

static char tmpdir[64];

static int mk_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dsn.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int rm_tmp(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b = malloc(1 << 20);
    size_t n;

    assert_non_null(f);
    assert_non_null(b);
    n = fread(b, 1, (1 << 20) - 1, f);
    fclose(f);
    b[n] = '\0';
    *len = n;
    return b;
}

static void mbox_append(void **state)
{
    static const char msg[] = "From: Mail Delivery System <MAILER-DAEMON@mx>\r\n"
                              "Subject: x\r\n"
                              "\r\n"
                              "From here on\r\n"
                              ">From there\n"
                              ">>From everywhere\r\n"
                              "Fromage\r\n"
                              " From indented\r\n"
                              "From:\r\n"
                              "last line without end";
    static const char want[] = "From MAILER-DAEMON Tue Nov 14 23:13:20 2023\n"
                               "From: Mail Delivery System <MAILER-DAEMON@mx>\n"
                               "Subject: x\n"
                               "\n"
                               ">From here on\n"
                               ">>From there\n"
                               ">>>From everywhere\n"
                               "Fromage\n"
                               " From indented\n"
                               "From:\n"
                               "last line without end\n"
                               "\n";
    static const char second[] = "Subject: y\r\n\r\nbody\r\n";
    static const char want2[] = "From MAILER-DAEMON Sun Jan  7 01:02:03 2024\n"
                                "Subject: y\n\nbody\n\n";
    char path[128], *got, *both;
    size_t len;
    struct stat sb;
    (void)state;

    snprintf(path, sizeof path, "%s/mbox", tmpdir);
    assert_int_equal(dsn_mbox_append(path, msg, sizeof msg - 1, 1700003600), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    got = slurp(path, &len);
    assert_string_equal(got, want);
    free(got);
    /* a second message goes after the first */
    assert_int_equal(dsn_mbox_append(path, second, sizeof second - 1, 1704589323), 0);
    got = slurp(path, &len);
    both = malloc(sizeof want + sizeof want2);
    assert_non_null(both);
    snprintf(both, sizeof want + sizeof want2, "%s%s", want, want2);
    assert_string_equal(got, both);
    free(both);
    free(got);
}

static void mbox_refusals(void **state)
{
    char path[128], target[128], lnk[128], fifo[128], *got;
    size_t len;
    (void)state;

    /* a symbolic link, even to a mailbox, is not followed */
    snprintf(target, sizeof target, "%s/target", tmpdir);
    snprintf(lnk, sizeof lnk, "%s/link", tmpdir);
    assert_int_equal(dsn_mbox_append(target, "a\n", 2, 0), 0);
    assert_int_equal(symlink(target, lnk), 0);
    errno = 0;
    assert_int_equal(dsn_mbox_append(lnk, "b\n", 2, 0), -1);
    assert_int_equal(errno, ELOOP);
    got = slurp(target, &len);
    assert_string_equal(got, "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\na\n\n");
    free(got);
    /* a dangling one is not created through */
    snprintf(path, sizeof path, "%s/nowhere", tmpdir);
    unlink(lnk);
    assert_int_equal(symlink(path, lnk), 0);
    assert_int_equal(dsn_mbox_append(lnk, "b\n", 2, 0), -1);
    assert_int_equal(access(path, F_OK), -1);
    /* a hard link: another name for a file that may be anything */
    snprintf(path, sizeof path, "%s/hard", tmpdir);
    assert_int_equal(link(target, path), 0);
    errno = 0;
    assert_int_equal(dsn_mbox_append(path, "b\n", 2, 0), -1);
    assert_int_equal(errno, EINVAL);
    /* a FIFO: refused at once, not waited on */
    snprintf(fifo, sizeof fifo, "%s/fifo", tmpdir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    assert_int_equal(dsn_mbox_append(fifo, "b\n", 2, 0), -1);
    alarm(0);
    /* a directory */
    errno = 0;
    assert_int_equal(dsn_mbox_append(tmpdir, "b\n", 2, 0), -1);
    assert_int_equal(errno, EISDIR);
    got = slurp(target, &len);
    assert_string_equal(got, "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\na\n\n");
    free(got);
}

/* Another process holds the lock a mail reader would take: the append
 * waits for it and writes after what that process wrote. */
static void mbox_lock(void **state)
{
    char path[128], c, *got;
    int p[2], fd;
    pid_t pid;
    size_t len;
    (void)state;

    snprintf(path, sizeof path, "%s/locked", tmpdir);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl;
        struct timespec ts = {0, 400 * 1000 * 1000};
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fd = open(path, O_WRONLY | O_APPEND);
        if (fd < 0 || fcntl(fd, F_SETLKW, &fl) != 0)
            _exit(1);
        if (write(p[1], "L", 1) != 1)
            _exit(1);
        nanosleep(&ts, NULL);
        if (write(fd, "HOLDER\n", 7) != 7)
            _exit(1);
        _exit(0); /* the lock goes with the process */
    }
    close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    /* The holder writes after a pause, then lets go: an append that did not
     * wait for the lock would come first (the order is the check, not a
     * duration, which a loaded machine or valgrind would stretch). */
    assert_int_equal(dsn_mbox_append(path, "m\n", 2, 0), 0);
    {
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    got = slurp(path, &len);
    assert_string_equal(got, "HOLDER\nFrom MAILER-DAEMON Thu Jan  1 00:00:00 1970\nm\n\n");
    free(got);
}

/* A mail reader that holds the lock and puts a new file in place (as one
 * that rewrites the mailbox does): the append goes to the new file, not to
 * the old one, which is gone from the mailbox. */
static void mbox_replaced(void **state)
{
    char path[128], old[128], tmp[128], c, *got;
    int p[2], fd;
    pid_t pid;
    size_t len;
    (void)state;

    snprintf(path, sizeof path, "%s/box", tmpdir);
    snprintf(old, sizeof old, "%s/box.old", tmpdir);
    snprintf(tmp, sizeof tmp, "%s/box.tmp", tmpdir);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl;
        struct timespec ts = {0, 300 * 1000 * 1000};
        int nfd;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fd = open(path, O_WRONLY | O_APPEND);
        if (fd < 0 || fcntl(fd, F_SETLKW, &fl) != 0 || write(p[1], "L", 1) != 1)
            _exit(1);
        nanosleep(&ts, NULL);
        nfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (nfd < 0 || write(nfd, "NEW\n", 4) != 4 || close(nfd) != 0 ||
            rename(path, old) != 0 || rename(tmp, path) != 0)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    assert_int_equal(dsn_mbox_append(path, "m\n", 2, 0), 0);
    {
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    got = slurp(path, &len);
    assert_string_equal(got, "NEW\nFrom MAILER-DAEMON Thu Jan  1 00:00:00 1970\nm\n\n");
    free(got);
    got = slurp(old, &len);
    assert_string_equal(got, "");
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(structure),
        cmocka_unit_test(status_table),
        cmocka_unit_test(diagnostic_code),
        cmocka_unit_test(hostile_texts),
        cmocka_unit_test(header_section),
        cmocka_unit_test(refusals),
        cmocka_unit_test_setup_teardown(mbox_append, mk_tmp, rm_tmp),
        cmocka_unit_test_setup_teardown(mbox_refusals, mk_tmp, rm_tmp),
        cmocka_unit_test_setup_teardown(mbox_lock, mk_tmp, rm_tmp),
        cmocka_unit_test_setup_teardown(mbox_replaced, mk_tmp, rm_tmp),
    };
    return cmocka_run_group_tests_name("dsn", tests, NULL, NULL);
}
