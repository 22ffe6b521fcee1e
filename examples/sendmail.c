/* See sendmail.h.  Messages may end lines with LF or CRLF (what local
 * programs hand to sendmail); the library turns the copy into CRLF. */
#include "sendmail.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int sm_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int sm_read_all(int fd, char **buf, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *b = malloc(cap + 1);

    if (!b)
        return -1;
    for (;;) {
        ssize_t r;
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                return -1;
            }
            b = nb;
            cap *= 2;
        }
        r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(b);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

static int same_address(const char *a, const char *b)
{
    const char *da = strrchr(a, '@'), *db = strrchr(b, '@');
    size_t la = da ? (size_t)(da - a) : strlen(a), lb = db ? (size_t)(db - b) : strlen(b);

    if (la != lb || memcmp(a, b, la) != 0 || !da != !db)
        return 0;
    return !da || strcasecmp(da, db) == 0;
}

int sm_list_add(sm_list *l, const char *addr)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        if (same_address(l->v[i], addr))
            return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        char **nv = realloc(l->v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n] = strdup(addr);
    if (!l->v[l->n])
        return -1;
    l->n++;
    return 0;
}

void sm_list_free(sm_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* One list element: the angle address if there was one, else the bare
 * text (comments already left out), trimmed; a source route dropped. */
static int emit(char *bare, size_t nbare, char *angle, size_t nangle, int have_angle, sm_list *l)
{
    char *s = have_angle ? angle : bare;
    size_t n = have_angle ? nangle : nbare;
    char *colon;

    while (n && is_space(s[n - 1]))
        n--;
    s[n] = '\0';
    while (is_space(*s))
        s++;
    if (*s == '@' && (colon = strchr(s, ':')) != NULL)
        s = colon + 1;
    return *s ? sm_list_add(l, s) : 0;
}

int sm_parse_addresses(const char *value, size_t len, sm_list *l)
{
    /* Each element is at most the whole value long. */
    char *bare = malloc(len + 1), *angle = malloc(len + 1);
    size_t nbare = 0, nangle = 0, i;
    int quote = 0, paren = 0, in_angle = 0, have_angle = 0, rc = 0;

    if (!bare || !angle) {
        free(bare);
        free(angle);
        return -1;
    }
    for (i = 0; i < len && rc == 0; i++) {
        char c = value[i];
        char *dst = in_angle ? angle : bare;
        size_t *nd = in_angle ? &nangle : &nbare;

        if (c == '\r' || c == '\n')
            c = ' '; /* unfolding */
        if (quote) {
            if (c == '\\' && i + 1 < len) {
                dst[(*nd)++] = c;
                c = value[++i];
                if (c == '\r' || c == '\n')
                    c = ' '; /* no quoted-pair: a line end, unfolded */
            } else if (c == '"') {
                quote = 0;
            }
            dst[(*nd)++] = c;
        } else if (paren) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '(')
                paren++;
            else if (c == ')')
                paren--;
        } else if (c == '(') {
            paren = 1;
        } else if (c == '"') {
            quote = 1;
            dst[(*nd)++] = c;
        } else if (c == '<' && !in_angle) {
            in_angle = have_angle = 1;
            nangle = 0;
        } else if (c == '>' && in_angle) {
            in_angle = 0;
        } else if (in_angle) {
            angle[nangle++] = c;
        } else if (c == ':') {
            nbare = 0; /* "Group:": the name before it is no address */
        } else if (c == ',' || c == ';') {
            rc = emit(bare, nbare, angle, nangle, have_angle, l);
            nbare = nangle = 0;
            have_angle = 0;
        } else {
            bare[nbare++] = c;
        }
    }
    if (rc == 0)
        rc = emit(bare, nbare, angle, nangle, have_angle, l);
    free(bare);
    free(angle);
    return rc;
}

/* The index after the line that i is in: lines end with CRLF, LF or a
 * bare CR, as the library's content encoder ends them on the wire (it
 * turns each into CRLF), so a field hidden behind a bare CR here would be
 * a field there. */
static size_t line_end(const char *m, size_t len, size_t i)
{
    while (i < len && m[i] != '\r' && m[i] != '\n')
        i++;
    if (i < len && m[i] == '\r' && i + 1 < len && m[i + 1] == '\n')
        i++;
    return i < len ? i + 1 : len;
}

/* Where the header section starts: after a leading mbox "From " line,
 * which programs written for sendmail may hand over and which sendmail
 * drops (it is no header field, so it would end the header section). */
static size_t header_start(const char *m, size_t len)
{
    if (len >= 5 && memcmp(m, "From ", 5) == 0) {
        size_t i = 5;
        while (i < len && (m[i] == ' ' || m[i] == '\t'))
            i++;
        if (i < len && m[i] != ':') /* "From : x" is a field */
            return line_end(m, len, 0);
    }
    return 0;
}

/* The field starting at pos: its name's length, where its value starts and
 * where it ends (after its continuation lines).  0 at the end of the
 * header section: an empty line, or a line that is no field. */
static int next_field(const char *m, size_t len, size_t pos, size_t *name_len, size_t *value,
                      size_t *end)
{
    size_t i = pos;

    while (i < len && (unsigned char)m[i] > 32 && (unsigned char)m[i] < 127 && m[i] != ':')
        i++;
    if (i == pos)
        return 0;
    *name_len = i - pos;
    while (i < len && (m[i] == ' ' || m[i] == '\t')) /* obsolete: "Bcc :" */
        i++;
    if (i == len || m[i] != ':')
        return 0;
    *value = i + 1;
    i = line_end(m, len, i);
    while (i < len && (m[i] == ' ' || m[i] == '\t'))
        i = line_end(m, len, i);
    *end = i;
    return 1;
}

static int field_is(const char *m, size_t pos, size_t name_len, const char *name)
{
    return strlen(name) == name_len && strncasecmp(m + pos, name, name_len) == 0;
}

int sm_header_recipients(const char *msg, size_t len, sm_list *l)
{
    size_t pos = header_start(msg, len), nl, val, end;

    while (next_field(msg, len, pos, &nl, &val, &end)) {
        if (field_is(msg, pos, nl, "to") || field_is(msg, pos, nl, "cc") ||
            field_is(msg, pos, nl, "bcc")) {
            if (sm_parse_addresses(msg + val, end - val, l) != 0)
                return -1;
        }
        pos = end;
    }
    return 0;
}

int sm_has_header(const char *msg, size_t len, const char *name)
{
    size_t pos = header_start(msg, len), nl, val, end;

    while (next_field(msg, len, pos, &nl, &val, &end)) {
        if (field_is(msg, pos, nl, name))
            return 1;
        pos = end;
    }
    return 0;
}

/* src's n bytes with every line end (CRLF, LF, bare CR) written as CRLF;
 * the length written, at most 2 n. */
static size_t copy_crlf(char *dst, const char *src, size_t n)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (src[i] == '\r' || src[i] == '\n') {
            if (src[i] == '\r' && i + 1 < n && src[i + 1] == '\n')
                i++;
            dst[o++] = '\r';
            dst[o++] = '\n';
        } else {
            dst[o++] = src[i];
        }
    }
    return o;
}

int sm_message_copy(const char *msg, size_t len, const char *from_line, char **out,
                    size_t *out_len)
{
    size_t extra = from_line ? strlen(from_line) + 8 : 0;
    size_t pos = header_start(msg, len), n = 0, nl, val, end;
    char *b;

    /* the header lines may double (line ends become CRLF) */
    if (len > ((size_t)-1 - extra - 3) / 2)
        return -1;
    b = malloc(2 * len + extra + 3);
    if (!b)
        return -1;
    if (from_line) {
        memcpy(b, "From: ", 6);
        memcpy(b + 6, from_line, extra - 8);
        memcpy(b + extra - 2, "\r\n", 2);
        n = extra;
    }
    /* The fields kept are written with CRLF line ends: as they were, a
     * field ending in a bare CR, once the Bcc after it is gone, could meet
     * the LF of the empty line and make one CRLF of the two, so that the
     * header section would run on into the body. */
    while (next_field(msg, len, pos, &nl, &val, &end)) {
        if (!field_is(msg, pos, nl, "bcc"))
            n += copy_crlf(b + n, msg + pos, end - pos);
        pos = end;
    }
    /* A line that is neither a field nor empty ends the header section
     * here; a receiver might read on and take a Bcc field after it as a
     * header.  The empty line that should have been there makes it body,
     * as sendmail and Postfix do. */
    if (pos < len && msg[pos] != '\r' && msg[pos] != '\n') {
        memcpy(b + n, "\r\n", 2);
        n += 2;
    }
    memcpy(b + n, msg + pos, len - pos);
    n += len - pos;
    b[n] = '\0';
    *out = b;
    *out_len = n;
    return 0;
}
