/*
 * net.c - the socket transport: TCP with deadlines.  The only file that
 * calls poll, recv and send.
 *
 * Sockets are non-blocking; every wait is a poll() bounded by the caller's
 * deadline, so a server that drips one byte a second cannot stretch a
 * command past its deadline.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "internal.h"

/* Waits for events on fd until deadline.  TM_OK, TM_ETIMEOUT or TM_EIO. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { fd, events, 0 };
        int64_t left = deadline == INT64_MAX ? -1 : deadline - tm__now_ms();
        int n;

        if (deadline != INT64_MAX && left <= 0)
            return TM_ETIMEOUT;
        if (events == POLLIN) {
            /* Delayed ACKs stall a server that answers in two writes
             * (Postfix: the envelope replies, then the BDAT reply) by
             * ~40 ms; the kernel clears TCP_QUICKACK by itself (our own
             * sends put it back in delayed-ACK mode), so it is re-armed
             * before every wait: whatever arrives is acknowledged at once. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        n = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
        if (n > 0)
            return TM_OK; /* readable, writable, or an error the next call reports */
        if (n == 0)
            return TM_ETIMEOUT;
        if (errno != EINTR)
            return TM_EIO;
    }
}

static long sock_recv(tm_sock *s, void *buf, size_t size, int64_t deadline)
{
    /* Right after a command was sent its reply cannot have arrived: wait
     * first instead of a recv that would say EAGAIN.  A deadline already
     * passed still takes what has arrived. */
    if (s->sent) {
        s->sent = 0;
        if (deadline == INT64_MAX || deadline > tm__now_ms()) {
            int rc = wait_fd(s->fd, POLLIN, deadline);
            if (rc != TM_OK)
                return rc;
        }
    }
    for (;;) {
        ssize_t n = recv(s->fd, buf, size, 0);

        if (n > 0)
            return (long)n;
        if (n == 0)
            return TM_ECLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(s->fd, POLLIN, deadline);
            if (rc != TM_OK)
                return rc;
            continue;
        }
        return errno == ECONNRESET ? TM_ECLOSED : TM_EIO;
    }
}

static long sock_read(tm_transport *t, void *buf, size_t size, int64_t deadline)
{
    tm_sock *s = (tm_sock *)t;
    long n;

    if (s->fd < 0)
        return TM_ECLOSED;
    if (s->rx_len > s->rx_pos) {
        size_t k = s->rx_len - s->rx_pos < size ? s->rx_len - s->rx_pos : size;
        memcpy(buf, s->rx + s->rx_pos, k);
        s->rx_pos += k;
        return (long)k;
    }
    s->rx_pos = s->rx_len = 0;
    /* A large request goes straight to the caller's buffer; a small one
     * (mbedTLS asks for a record header, then its body) fills the
     * read-ahead with whatever has arrived: one recv per packet. */
    if (size >= sizeof s->rx)
        return sock_recv(s, buf, size, deadline);
    n = sock_recv(s, s->rx, sizeof s->rx, deadline);
    if (n <= 0)
        return n;
    s->rx_len = (size_t)n;
    return sock_read(t, buf, size, deadline);
}

static int sock_write(tm_transport *t, const void *buf, size_t len, int64_t deadline)
{
    tm_sock *s = (tm_sock *)t;
    const unsigned char *p = buf;

    if (s->fd < 0)
        return TM_ECLOSED;
    while (len > 0) {
        ssize_t n = send(s->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            s->sent = 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(s->fd, POLLOUT, deadline);
            if (rc != TM_OK)
                return rc;
            continue;
        }
        return (n < 0 && (errno == EPIPE || errno == ECONNRESET)) ? TM_ECLOSED : TM_EIO;
    }
    return TM_OK;
}

static size_t sock_pending(tm_transport *t)
{
    tm_sock *s = (tm_sock *)t;
    int n = 0;

    if (s->fd < 0)
        return 0;
    if (s->rx_len > s->rx_pos)
        return s->rx_len - s->rx_pos;
    return ioctl(s->fd, FIONREAD, &n) == 0 && n > 0 ? (size_t)n : 0;
}

static void sock_close(tm_transport *t)
{
    tm_sock *s = (tm_sock *)t;

    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->sent = 0;
    s->rx_pos = s->rx_len = 0;
}

static const tm_transport_ops sock_ops = { sock_read, sock_write, sock_pending, sock_close };

void tm__sock_init(tm_sock *s)
{
    s->base.ops = &sock_ops;
    s->fd = -1;
    s->sent = 0;
    s->rx_pos = s->rx_len = 0;
}

int tm__sock_connect(tm_sock *s, const struct sockaddr *sa, socklen_t salen, int64_t deadline)
{
    int one = 1;
    int fd, err = 0, rc;
    socklen_t errlen = sizeof err;

    sock_close(&s->base);
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return errno == ENOMEM || errno == ENOBUFS ? TM_ENOMEM : TM_ECONNECT;
    /* Commands are written whole and coalesced: never wait for Nagle. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    if (connect(fd, sa, salen) != 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return TM_ECONNECT;
        }
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc != TM_OK) {
            close(fd);
            return rc == TM_ETIMEOUT ? TM_ETIMEOUT : TM_ECONNECT;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0 || err != 0) {
            close(fd);
            return TM_ECONNECT;
        }
    }
    s->fd = fd;
    return TM_OK;
}

void tm__net_ntop(const struct sockaddr *sa, char *buf, size_t size)
{
    const void *a = NULL;

    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (!a || !inet_ntop(sa->sa_family, a, buf, (socklen_t)size))
        tm__strlcpy(buf, "?", size);
}

int tm__net_parse_addr(const char *text, unsigned int default_port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    char host[64];
    const char *port_s = NULL;
    unsigned long port = default_port;
    size_t n;

    if (!text || !*text)
        return TM_EINVAL;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || (size_t)(end - text - 1) >= sizeof host)
            return TM_EINVAL;
        n = (size_t)(end - text - 1);
        memcpy(host, text + 1, n);
        host[n] = '\0';
        if (end[1] == ':')
            port_s = end + 2;
        else if (end[1] != '\0')
            return TM_EINVAL;
    } else {
        const char *colon = strchr(text, ':');
        if (colon && strchr(colon + 1, ':'))
            colon = NULL; /* a bare IPv6 address */
        n = colon ? (size_t)(colon - text) : strlen(text);
        if (n >= sizeof host)
            return TM_EINVAL;
        memcpy(host, text, n);
        host[n] = '\0';
        if (colon)
            port_s = colon + 1;
    }
    if (port_s) {
        char *end;
        if (!*port_s)
            return TM_EINVAL;
        errno = 0;
        port = strtoul(port_s, &end, 10);
        if (*end || errno || port == 0 || port > 65535)
            return TM_EINVAL;
    }
    memset(ss, 0, sizeof *ss);
    {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)ss;
        if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)port);
            *len = sizeof *s4;
        } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)port);
            *len = sizeof *s6;
        } else {
            return TM_EINVAL;
        }
    }
    return TM_OK;
}
