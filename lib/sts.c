/*
 * sts.c - MTA-STS (RFC 8461): the TXT record at _mta-sts.<domain>, the
 * policy text served at https://mta-sts.<domain>/.well-known/mta-sts.txt,
 * and matching an MX host against the policy's patterns.  Pure: no I/O,
 * no allocation; the lookups, the fetch and the cache build on these.
 */
#include <string.h>

#include "internal.h"

static int is_wsp(int c)
{
    return c == ' ' || c == '\t';
}

static int is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/*
 * RFC 8461 3.1: sts-text-record = sts-version 1*(sts-sep sts-field)
 * [sts-sep]; sts-version = "v=STSv1"; sts-sep = *WSP ";" *WSP; sts-id =
 * "id=" 1*32(ALPHA / DIGIT); sts-extension = sts-ext-name "=" 1*(%x21-3A /
 * %x3C / %x3E-7E), the name (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-"
 * / "."), ignored.  No blanks around "="; the version comes first.
 */
static int parse_txt(const char *txt, size_t len, char id[TM_STS_ID_MAX])
{
    size_t i = 0;
    int have_id = 0;

    id[0] = '\0';
    if (!txt)
        return TM_ESYNTAX;
    if (len < 7 || memcmp(txt, "v=STSv1", 7) != 0)
        return TM_ESYNTAX;
    i = 7;
    for (;;) {
        size_t name, name_len, value, value_len;

        while (i < len && is_wsp(txt[i]))
            i++;
        if (i >= len)
            break;
        if (txt[i] != ';')
            return TM_ESYNTAX;
        i++;
        while (i < len && is_wsp(txt[i]))
            i++;
        if (i >= len)
            break; /* a trailing separator */
        /* sts-field-name = ALPHA / DIGIT, then ALPHA / DIGIT / "_" / "-" / "." */
        name = i;
        if (!is_alnum((unsigned char)txt[i]))
            return TM_ESYNTAX;
        while (i < len && (is_alnum((unsigned char)txt[i]) || txt[i] == '_' || txt[i] == '-' ||
                           txt[i] == '.'))
            i++;
        name_len = i - name;
        if (name_len > 32 || i >= len || txt[i] != '=')
            return TM_ESYNTAX;
        i++;
        /* sts-field-value = 1*(%x21-3A / %x3C / %x3E-7E): no ";", "=", space */
        value = i;
        while (i < len && (unsigned char)txt[i] >= 0x21 && (unsigned char)txt[i] <= 0x7e &&
               txt[i] != ';' && txt[i] != '=')
            i++;
        value_len = i - value;
        if (value_len == 0)
            return TM_ESYNTAX;
        if (name_len == 2 && memcmp(txt + name, "id", 2) == 0) {
            size_t k;
            if (have_id || value_len > TM_STS_ID_MAX - 1)
                return TM_ESYNTAX;
            for (k = 0; k < value_len; k++)
                if (!is_alnum((unsigned char)txt[value + k]))
                    return TM_ESYNTAX;
            memcpy(id, txt + value, value_len);
            id[value_len] = '\0';
            have_id = 1;
        }
    }
    return have_id ? TM_OK : TM_ESYNTAX;
}

int tm__sts_parse_txt(const char *txt, size_t len, char id[TM_STS_ID_MAX])
{
    int rc = parse_txt(txt, len, id);

    if (rc != TM_OK)
        id[0] = '\0'; /* nothing of a refused record is kept */
    return rc;
}

/* Whether name (len bytes) is a host name as a pattern needs it: LDH
 * labels of 1 to 63 octets separated by dots, at most 253 octets. */
static int ldh_name(const char *name, size_t len)
{
    size_t i, label = 0;

    if (len == 0 || len > 253 || name[0] == '.' || name[len - 1] == '.')
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0 || name[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(is_alnum(c) || c == '-') || (c == '-' && label == 0) || ++label > 63)
            return 0;
    }
    return name[len - 1] != '-';
}

/* A case-insensitive comparison of n bytes. */
static int same(const char *a, const char *b, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

/* One "key: value" line of a policy into p.  TM_OK, or TM_ESYNTAX. */
static int policy_line(const char *line, size_t len, tm_sts_policy *p, unsigned int *seen)
{
    size_t i = 0, key, key_len, value, value_len;

    while (len > 0 && is_wsp(line[len - 1]))
        len--;
    if (len == 0)
        return TM_OK; /* an empty line (e.g. the last) */
    key = i;
    while (i < len && line[i] != ':' && !is_wsp(line[i]))
        i++;
    key_len = i - key;
    while (i < len && is_wsp(line[i]))
        i++;
    if (key_len == 0 || i >= len || line[i] != ':')
        return TM_ESYNTAX;
    i++;
    while (i < len && is_wsp(line[i]))
        i++;
    value = i;
    value_len = len - i;

#define KEY(s) (key_len == sizeof(s) - 1 && memcmp(line + key, s, key_len) == 0)
    if (KEY("version")) {
        if ((*seen & 1) || value_len != 5 || memcmp(line + value, "STSv1", 5) != 0)
            return TM_ESYNTAX;
        *seen |= 1;
    } else if (KEY("mode")) {
        if (*seen & 2)
            return TM_ESYNTAX;
        if (value_len == 7 && memcmp(line + value, "enforce", 7) == 0)
            p->mode = TM_STS_ENFORCE;
        else if (value_len == 7 && memcmp(line + value, "testing", 7) == 0)
            p->mode = TM_STS_TESTING;
        else if (value_len == 4 && memcmp(line + value, "none", 4) == 0)
            p->mode = TM_STS_NONE;
        else
            return TM_ESYNTAX;
        *seen |= 2;
    } else if (KEY("max_age")) {
        unsigned long v = 0;
        size_t k;
        if ((*seen & 4) || value_len == 0 || value_len > 10)
            return TM_ESYNTAX;
        for (k = 0; k < value_len; k++) {
            char c = line[value + k];
            if (c < '0' || c > '9')
                return TM_ESYNTAX;
            v = v * 10 + (unsigned long)(c - '0');
        }
        p->max_age = v > TM_STS_MAX_AGE_MAX ? TM_STS_MAX_AGE_MAX : v;
        *seen |= 4;
    } else if (KEY("mx")) {
        const char *name = line + value;
        size_t name_len = value_len;
        int wildcard = 0;
        if (name_len >= 2 && name[0] == '*' && name[1] == '.') {
            wildcard = 1;
            name += 2;
            name_len -= 2;
        }
        if (!ldh_name(name, name_len) || name_len >= TM_HOST_MAX)
            return TM_ESYNTAX;
        if (p->nmx < TM_STS_MX_MAX) {
            tm_sts_mx *m = &p->mx[p->nmx++];
            m->wildcard = wildcard;
            memcpy(m->name, name, name_len);
            m->name[name_len] = '\0';
        } else {
            p->mx_dropped++;
        }
    }
    /* Other keys: ignored (RFC 8461 3.2, extensions). */
#undef KEY
    return TM_OK;
}

static int parse_policy(const char *text, size_t len, tm_sts_policy *p)
{
    unsigned int seen = 0;
    size_t start = 0, i;

    memset(p, 0, sizeof *p);
    if (!text)
        return TM_ESYNTAX;
    for (i = 0; i <= len; i++) {
        size_t end;
        if (i < len && text[i] != '\n')
            continue;
        end = i;
        if (end > start && text[end - 1] == '\r')
            end--;
        if (memchr(text + start, '\0', end - start) || memchr(text + start, '\r', end - start))
            return TM_ESYNTAX;
        if (policy_line(text + start, end - start, p, &seen) != TM_OK)
            return TM_ESYNTAX;
        start = i + 1;
    }
    /* version, mode and max_age are required; mx too unless mode none. */
    if (seen != 7 || (p->mode != TM_STS_NONE && p->nmx == 0))
        return TM_ESYNTAX;
    return TM_OK;
}

int tm__sts_parse_policy(const char *text, size_t len, tm_sts_policy *p)
{
    int rc = parse_policy(text, len, p);

    if (rc != TM_OK)
        memset(p, 0, sizeof *p); /* a refused policy leaves nothing to use */
    return rc;
}

int tm__sts_mx_match(const tm_sts_policy *p, const char *host)
{
    size_t hlen;
    int i;

    if (!host)
        return 0;
    hlen = strlen(host);
    if (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    for (i = 0; i < p->nmx; i++) {
        const tm_sts_mx *m = &p->mx[i];
        size_t mlen = strlen(m->name);
        if (!m->wildcard) {
            if (hlen == mlen && same(host, m->name, mlen))
                return 1;
            continue;
        }
        /* "*.example.com": exactly one label, not empty, before ".example.com". */
        if (hlen > mlen + 1 && host[hlen - mlen - 1] == '.' &&
            same(host + hlen - mlen, m->name, mlen)) {
            size_t first = hlen - mlen - 1;
            if (memchr(host, '.', first) == NULL)
                return 1;
        }
    }
    return 0;
}

/* ---- the HTTP response of the policy fetch ------------------------------------- */

/* Case-insensitive: does the header line [p, p+n) name `key` ("key:")? */
static int header_is(const char *p, size_t n, const char *key, size_t *value)
{
    size_t k = strlen(key);

    if (n <= k || p[k] != ':' || !same(p, key, k))
        return 0;
    *value = k + 1;
    while (*value < n && is_wsp(p[*value]))
        (*value)++;
    return 1;
}

/* The body's end in buf[at, len) under chunked coding, the data copied to
 * body: 1 complete, 0 more needed, TM_EPROTOCOL (bad coding, too big). */
static int dechunk(const char *buf, size_t len, size_t at, char *body, size_t cap, size_t *blen)
{
    *blen = 0;
    for (;;) {
        size_t size = 0, digits = 0, eol;
        const char *nl = memchr(buf + at, '\n', len - at);

        if (!nl)
            return len - at > 1024 ? TM_EPROTOCOL : 0;
        eol = (size_t)(nl - buf);
        while (at + digits < eol) {
            char c = buf[at + digits];
            int v = c >= '0' && c <= '9' ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v < 0)
                break;
            if (++digits > 8)
                return TM_EPROTOCOL;
            size = size * 16 + (size_t)v;
        }
        if (digits == 0)
            return TM_EPROTOCOL;
        at = eol + 1; /* chunk extensions after the size are ignored */
        if (size == 0) {
            /* Trailer lines, then an empty line. */
            for (;;) {
                nl = memchr(buf + at, '\n', len - at);
                if (!nl)
                    return len - at > 1024 ? TM_EPROTOCOL : 0;
                eol = (size_t)(nl - buf);
                if (eol == at || (eol == at + 1 && buf[at] == '\r'))
                    return 1;
                at = eol + 1;
            }
        }
        if (size > cap - *blen)
            return TM_EPROTOCOL;
        if (len - at < size + 1)
            return 0;
        memcpy(body + *blen, buf + at, size);
        *blen += size;
        at += size;
        if (buf[at] == '\r') {
            if (len - at < 2)
                return 0;
            at++;
        }
        if (buf[at] != '\n')
            return TM_EPROTOCOL;
        at++;
    }
}

int tm__http_parse_response(const char *buf, size_t len, int eof, char *body, size_t cap,
                            tm_http_response *r)
{
    size_t at, head_end = 0, i, value;
    long content_length = -1;
    int chunked = 0, first = 1;
    const char *end;

    memset(r, 0, sizeof *r);
    /* The head: lines up to an empty one. */
    for (i = 0; i < len; i++) {
        if (buf[i] == '\n' && ((i >= 1 && buf[i - 1] == '\n') ||
                               (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))) {
            head_end = i + 1;
            break;
        }
    }
    if (!head_end)
        return len > TM_HTTP_HEAD_MAX ? TM_EPROTOCOL : (eof ? TM_EPROTOCOL : 0);
    if (head_end > TM_HTTP_HEAD_MAX)
        return TM_EPROTOCOL;
    for (at = 0; at < head_end;) {
        size_t n;
        end = memchr(buf + at, '\n', head_end - at);
        n = (size_t)(end - (buf + at));
        if (n > 0 && buf[at + n - 1] == '\r')
            n--;
        if (memchr(buf + at, '\0', n))
            return TM_EPROTOCOL;
        if (first) {
            /* "HTTP/1.x SSS reason" */
            if (n < 12 || memcmp(buf + at, "HTTP/1.", 7) != 0 || buf[at + 8] != ' ' ||
                buf[at + 9] < '1' || buf[at + 9] > '5' || buf[at + 10] < '0' ||
                buf[at + 10] > '9' || buf[at + 11] < '0' || buf[at + 11] > '9' ||
                (n > 12 && buf[at + 12] != ' '))
                return TM_EPROTOCOL;
            r->status = (buf[at + 9] - '0') * 100 + (buf[at + 10] - '0') * 10 + (buf[at + 11] - '0');
            first = 0;
        } else if (n > 0 && header_is(buf + at, n, "content-type", &value)) {
            size_t v = n - value, k = 0;
            const char *t = buf + at + value;
            /* "text/plain", parameters (";charset=...") allowed. */
            while (k < v && t[k] != ';' && !is_wsp(t[k]))
                k++;
            r->text_plain = k == 10 && same(t, "text/plain", 10);
        } else if (n > 0 && header_is(buf + at, n, "content-length", &value)) {
            long v = 0;
            size_t k;
            if (content_length >= 0 || value >= n)
                return TM_EPROTOCOL;
            for (k = value; k < n && !is_wsp(buf[at + k]); k++) {
                if (buf[at + k] < '0' || buf[at + k] > '9' || v > 100000000L)
                    return TM_EPROTOCOL;
                v = v * 10 + (buf[at + k] - '0');
            }
            content_length = v;
        } else if (n > 0 && header_is(buf + at, n, "transfer-encoding", &value)) {
            if (n - value == 7 && same(buf + at + value, "chunked", 7))
                chunked = 1;
            else
                return TM_EPROTOCOL; /* no other coding is asked for or taken */
        }
        at += (size_t)(end - (buf + at)) + 1;
    }
    r->body_len = 0;
    if (r->status != 200)
        return 1; /* the status says enough: no body is read */
    if (chunked) {
        int rc = dechunk(buf, len, head_end, body, cap, &r->body_len);
        if (rc == 0 && eof)
            return TM_EPROTOCOL;
        return rc;
    }
    if (content_length >= 0) {
        if ((size_t)content_length > cap)
            return TM_EPROTOCOL;
        if (len - head_end < (size_t)content_length)
            return eof ? TM_EPROTOCOL : 0;
        memcpy(body, buf + head_end, (size_t)content_length);
        r->body_len = (size_t)content_length;
        return 1;
    }
    /* Delimited by the close. */
    if (len - head_end > cap)
        return TM_EPROTOCOL;
    if (!eof)
        return 0;
    memcpy(body, buf + head_end, len - head_end);
    r->body_len = len - head_end;
    return 1;
}
