/*
 * smtp.c - SMTP reply parser, EHLO capabilities, address and name checks.
 *
 * Everything here is pure: bytes in, structs out, no I/O and no
 * allocation, so the unit tests and the fuzzers replay server transcripts
 * without a socket.
 */
#include <arpa/inet.h>
#include <string.h>

#include "internal.h"

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* ------------------------------------------------------------------------
 * Replies
 * ---------------------------------------------------------------------- */

static void cap_line(tm_caps *caps, const char *line, size_t len);

void tm__reply_reset(tm_reply *r)
{
    if (r == NULL)
        return;
    r->code = 0;
    r->enhanced[0] = '\0';
    r->text[0] = '\0';
    r->text_len = 0;
    r->lines = 0;
    r->caps.flags = 0;
    r->caps.size_limit = 0;
}

/* "1" to "999": one to three digits, as RFC 3463's subject and detail. */
static size_t digits_1_3(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && n < 4 && is_digit((unsigned char)s[n]))
        n++;
    return (n >= 1 && n <= 3) ? n : 0;
}

/*
 * An RFC 3463 code "class.subject.detail" at the start of a first line's
 * text, kept only when its class matches the reply's first digit and it is
 * a word of its own (followed by a space or the end of the line); anything
 * else is ordinary text and the status shows no enhanced code.
 */
static void parse_enhanced(tm_reply *r, const char *t, size_t len)
{
    size_t i, n;

    if (len < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[0] - '0' != r->code / 100 ||
        t[1] != '.')
        return;
    i = 2;
    if ((n = digits_1_3(t + i, len - i)) == 0)
        return;
    i += n;
    if (i >= len || t[i] != '.')
        return;
    i++;
    if ((n = digits_1_3(t + i, len - i)) == 0)
        return;
    i += n;
    if (i < len && t[i] != ' ')
        return;
    memcpy(r->enhanced, t, i); /* i <= 9 < TM_ENHANCED_MAX */
    r->enhanced[i] = '\0';
}

static void append_text(tm_reply *r, const char *t, size_t len)
{
    size_t room;

    if (r->lines > 0 && r->text_len < TM_REPLY_TEXT_MAX - 1)
        r->text[r->text_len++] = '\n';
    room = TM_REPLY_TEXT_MAX - 1 - r->text_len;
    if (len > room)
        len = room;
    memcpy(r->text + r->text_len, t, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
}

/* One complete line without its LF (and CR).  Returns 1 for the last line of
 * the reply, 0 for a continuation line, TM_EPROTOCOL when malformed. */
static int parse_line(tm_reply *r, const char *line, size_t len)
{
    const unsigned char *u = (const unsigned char *)line;
    int code, last;

    if (memchr(line, '\0', len) != NULL)
        return TM_EPROTOCOL;
    if (len < 3 || !is_digit(u[0]) || !is_digit(u[1]) || !is_digit(u[2]))
        return TM_EPROTOCOL;
    if (u[0] < '2' || u[0] > '5' || u[1] > '5')
        return TM_EPROTOCOL;
    code = (u[0] - '0') * 100 + (u[1] - '0') * 10 + (u[2] - '0');
    if (len == 3 || u[3] == ' ')
        last = 1;
    else if (u[3] == '-')
        last = 0;
    else
        return TM_EPROTOCOL;
    if (r->lines == 0)
        r->code = code;
    else if (code != r->code)
        return TM_EPROTOCOL;
    if (r->lines >= TM_REPLY_LINES_MAX)
        return TM_EPROTOCOL;

    line += len > 3 ? 4 : 3;
    len -= len > 3 ? 4 : 3;
    if (r->lines == 0)
        parse_enhanced(r, line, len);
    else
        cap_line(&r->caps, line, len); /* whole lines: text[] may be cut */
    append_text(r, line, len);
    r->lines++;
    return last;
}

int tm__reply_parse(tm_reply *r, const char *buf, size_t len, size_t *used)
{
    size_t pos = 0;

    if (used != NULL)
        *used = 0;
    if (r == NULL || (buf == NULL && len > 0) || used == NULL)
        return TM_EINVAL;

    while (pos < len) {
        const char *line = buf + pos;
        size_t avail = len - pos;
        size_t scan = avail < TM_REPLY_LINE_MAX ? avail : TM_REPLY_LINE_MAX;
        const char *lf = memchr(line, '\n', scan);
        size_t n;
        int rc;

        if (lf == NULL) {
            /* A line may hold TM_REPLY_LINE_MAX bytes with its LF, so as
             * many bytes without one can only be an overlong line. */
            if (avail >= TM_REPLY_LINE_MAX)
                return TM_EPROTOCOL;
            break;
        }
        n = (size_t)(lf - line);
        pos += n + 1;
        if (n > 0 && line[n - 1] == '\r')
            n--;
        rc = parse_line(r, line, n);
        if (rc < 0)
            return rc;
        *used = pos;
        if (rc == 1)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Capabilities
 * ---------------------------------------------------------------------- */

static const struct {
    const char *word;
    unsigned int flag;
} cap_words[] = {
    {"starttls", TM_CAP_STARTTLS},
    {"pipelining", TM_CAP_PIPELINING},
    {"size", TM_CAP_SIZE},
    {"8bitmime", TM_CAP_8BITMIME},
    {"smtputf8", TM_CAP_SMTPUTF8},
    {"chunking", TM_CAP_CHUNKING},
    {"enhancedstatuscodes", TM_CAP_ENHANCEDSTATUSCODES},
};

static int word_is(const char *w, size_t len, const char *lc_word)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (lc_word[i] == '\0' || lower((unsigned char)w[i]) != (unsigned char)lc_word[i])
            return 0;
    return lc_word[len] == '\0';
}

/* SIZE's argument: decimal digits only; anything else, or a value that does
 * not fit, is ignored (no limit known). */
static unsigned long size_arg(const char *s, size_t len)
{
    unsigned long v = 0;
    size_t i = 0;

    while (i < len && s[i] == ' ')
        i++;
    if (i == len)
        return 0;
    for (; i < len && s[i] != ' '; i++) {
        unsigned int d;
        if (!is_digit((unsigned char)s[i]))
            return 0;
        d = (unsigned int)(s[i] - '0');
        if (v > (~0UL - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return v;
}

/* One line of an EHLO reply after the first: its keyword, and SIZE's
 * argument. */
static void cap_line(tm_caps *caps, const char *line, size_t len)
{
    size_t w, i;

    for (w = 0; w < len && line[w] != ' '; w++)
        ;
    if (w < 4 || w > 19) /* shorter or longer than any keyword we know */
        return;
    for (i = 0; i < sizeof(cap_words) / sizeof(cap_words[0]); i++) {
        if (word_is(line, w, cap_words[i].word)) {
            caps->flags |= cap_words[i].flag;
            if (cap_words[i].flag == TM_CAP_SIZE)
                caps->size_limit = size_arg(line + w, len - w);
            return;
        }
    }
}

void tm__caps_parse(tm_caps *caps, const tm_reply *ehlo)
{
    if (caps == NULL)
        return;
    caps->flags = 0;
    caps->size_limit = 0;
    if (ehlo != NULL && ehlo->code == 250)
        *caps = ehlo->caps;
}

/* ------------------------------------------------------------------------
 * Addresses and names
 * ---------------------------------------------------------------------- */

size_t tm__utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* Every byte >= 0x80 in s[0..len) is part of well-formed UTF-8. */
static int utf8_ok(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
        } else {
            size_t n = tm__utf8_seq(s + i, len - i);
            if (n == 0)
                return 0;
            i += n;
        }
    }
    return 1;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3). */
static int address_literal_ok(const char *s, size_t len)
{
    char tmp[64];
    unsigned char addr[16];

    if (len < 3 || s[0] != '[' || s[len - 1] != ']' || len - 2 >= sizeof(tmp))
        return 0;
    s++;
    len -= 2;
    if (len > 5 && (s[0] == 'I' || s[0] == 'i') && (s[1] == 'P' || s[1] == 'p') &&
        (s[2] == 'v' || s[2] == 'V') && s[3] == '6' && s[4] == ':') {
        memcpy(tmp, s + 5, len - 5);
        tmp[len - 5] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1;
}

/*
 * A dot-separated name: labels of 1 to 63 letters, digits and hyphens (and
 * UTF-8 for internationalised names when utf8 is set; '_' when underscore is
 * set, as real host names carry it), no hyphen at either end of a label.
 * With trailing_dot a single final '.' (a fully qualified name) is allowed.
 */
static int dot_name_ok(const char *s, size_t len, int utf8, int underscore, int trailing_dot)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i, label = 0;

    if (trailing_dot && len > 1 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return 0;
    for (i = 0; i <= len; i++) {
        if (i == len || u[i] == '.') {
            if (label == 0 || label > 63 || u[i - 1] == '-' || u[i - label] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(is_alpha(u[i]) || is_digit(u[i]) || u[i] == '-' || (underscore && u[i] == '_') ||
              (utf8 && u[i] >= 0x80)))
            return 0;
        label++;
    }
    return !utf8 || utf8_ok(u, len);
}

/* A quoted local part: '"' (qtext / '\' quoted-pair)* '"' (RFC 5321). */
static int quoted_local_ok(const unsigned char *s, size_t len)
{
    size_t i;

    if (len < 2 || s[0] != '"' || s[len - 1] != '"')
        return 0;
    for (i = 1; i < len - 1; i++) {
        if (s[i] == '\\') {
            if (++i >= len - 1)
                return 0; /* the backslash would escape the closing quote */
        } else if (s[i] == '"') {
            return 0;
        }
    }
    return 1;
}

/*
 * A dot-string local part.  Dots are not checked for position: RFC 5321
 * forbids "a..b" unquoted, but such addresses exist and servers take them,
 * and their dots do nothing to the protocol.  What is refused here is what
 * would change the meaning of the command line.
 */
static int atom_local_ok(const unsigned char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case ' ':
        case '"':
        case '\\':
        case '(':
        case ')':
        case ',':
        case ':':
        case ';':
        case '@':
        case '[':
        case ']':
            return 0;
        default:
            break;
        }
    }
    return 1;
}

int tm__address_check(const char *addr, int is_sender, int *non_ascii)
{
    const unsigned char *u = (const unsigned char *)addr;
    const char *at;
    size_t len, local_len;
    int high = 0;

    if (non_ascii != NULL)
        *non_ascii = 0;
    if (addr == NULL)
        return TM_EADDRESS;
    for (len = 0; len < TM_ADDRESS_MAX && u[len] != '\0'; len++) {
        if (u[len] < 0x20 || u[len] == 0x7f || u[len] == '<' || u[len] == '>')
            return TM_EADDRESS;
        if (u[len] >= 0x80)
            high = 1;
    }
    if (len >= TM_ADDRESS_MAX)
        return TM_EADDRESS;
    if (len == 0)
        return is_sender ? TM_OK : TM_EADDRESS;

    at = strrchr(addr, '@');
    if (at == NULL || at == addr)
        return TM_EADDRESS;
    local_len = (size_t)(at - addr);
    if (u[0] == '"') {
        if (!quoted_local_ok(u, local_len))
            return TM_EADDRESS;
    } else if (!atom_local_ok(u, local_len)) {
        return TM_EADDRESS;
    }
    if (high && !utf8_ok(u, local_len))
        return TM_EADDRESS;

    at++;
    if (at[0] == '[') {
        if (!address_literal_ok(at, len - local_len - 1))
            return TM_EADDRESS;
    } else if (!dot_name_ok(at, len - local_len - 1, 1, 0, 0)) {
        return TM_EADDRESS;
    }
    if (non_ascii != NULL)
        *non_ascii = high;
    return TM_OK;
}

const char *tm__address_domain(const char *addr)
{
    const char *at;

    if (addr == NULL || (at = strrchr(addr, '@')) == NULL)
        return NULL;
    return at + 1;
}

int tm__domain_equal(const char *a, const char *b)
{
    size_t la, lb, i;

    if (a == NULL || b == NULL)
        return 0;
    la = strlen(a);
    lb = strlen(b);
    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    /* An empty name is no domain: it equals nothing. */
    if (la == 0 || la != lb)
        return 0;
    for (i = 0; i < la; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int tm__name_check(const char *name)
{
    size_t len;
    unsigned char addr[16];

    if (name == NULL)
        return TM_EINVAL;
    for (len = 0; len <= 255 && name[len] != '\0'; len++)
        if ((unsigned char)name[len] <= 0x20 || (unsigned char)name[len] >= 0x7f)
            return TM_EINVAL;
    if (len == 0 || len > 255)
        return TM_EINVAL;
    if (name[0] == '[')
        return address_literal_ok(name, len) ? TM_OK : TM_EINVAL;
    /* An explicit host may be a bare IPv6 address. */
    if (strchr(name, ':') != NULL)
        return inet_pton(AF_INET6, name, addr) == 1 ? TM_OK : TM_EINVAL;
    return dot_name_ok(name, len, 0, 1, 1) ? TM_OK : TM_EINVAL;
}
