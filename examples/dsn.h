/*
 * Bounce messages for tm-send's sendmail mode: a delivery status
 * notification (RFC 3464) inside a multipart/report (RFC 6522) for the
 * recipients that bounced or whose queue entry expired, and the local
 * mailbox it may be appended to.  No SMTP, no network; dsn_build does no
 * I/O but reading /dev/urandom.
 *
 * The DSN is three parts: a text/plain explanation, the
 * message/delivery-status report (Action: failed for every recipient given)
 * and the original message's header section as text/rfc822-headers.  It is
 * marked Auto-Submitted: auto-replied (RFC 3834); it must be sent with the
 * null envelope sender (MAIL FROM:<>), so that it is never bounced itself.
 *
 * What comes from a server, the queue or the original message cannot break
 * the structure: every output line ends in CRLF, is 7-bit and shorter than
 * 998 octets.  In addresses and host names a byte that is not printable
 * ASCII (or is a space, '<' or '>') becomes '?'; in texts CR, LF and HT
 * become a space and other control or 8-bit bytes '?'.  Addresses and host
 * names are cut at 256 characters, texts at 400 ("..." marks the cut), the
 * returned header section at 64 KiB, its lines folded (CRLF SP) before 998.
 */
#ifndef TM_DSN_H
#define TM_DSN_H

#include <stddef.h>

/* One recipient that was not delivered. */
typedef struct {
    const char *address;    /* the recipient (Final-Recipient: rfc822; ...) */
    int code;               /* SMTP reply code, 0 when there was no reply */
    const char *enhanced;   /* RFC 3463 "5.1.1", or "" or NULL */
    const char *text;       /* the server's reply text, or the local reason; may be NULL */
    const char *remote_mta; /* the MX host that answered, "" or NULL when none */
    int expired;            /* given up after the queue lifetime */
} dsn_rcpt;

/* The message and who reports on it. */
typedef struct {
    const char *reporting_mta; /* this host's name: Reporting-MTA: dns; NAME,
                                * From: MAILER-DAEMON@NAME, the Message-ID's domain */
    const char *sender;        /* envelope sender: the DSN goes To this address */
    long long arrival;         /* Unix time the message was accepted; 0 = no Arrival-Date */
    long long now;             /* Unix time for Date: */
    const char *msg;           /* the original message, LF or CRLF (only its header
                                * section is returned); NULL when len is 0 */
    size_t len;
} dsn_info;

/*
 * Each recipient's Status: its enhanced code when that is a valid
 * class.subject.detail of class 4 or 5; else 4.4.7 when it expired; else
 * 5.0.0 for a 5xx reply, 4.0.0 for a 4xx; else 5.0.0.  Writes it into out
 * (at least 12 bytes).
 */
void dsn_status(const dsn_rcpt *r, char *out, size_t cap);

/*
 * Builds the DSN for the n recipients r (n > 0) in a heap buffer: *out,
 * NUL-terminated, *out_len without the NUL; free it with free().  CRLF
 * line ends: the message as tm_deliver takes it.  Diagnostic-Code is "smtp; CODE TEXT"
 * when there was a reply, "X-tlsmail; TEXT" when not and the text is not
 * empty, absent otherwise; Remote-MTA when remote_mta is known.
 * 0, or -1 with errno: ENOMEM; EINVAL when n is 0, an argument is NULL,
 * reporting_mta is empty, or the sender is empty or "<>" (a message from
 * the null sender never gets a bounce); EAGAIN when no MIME boundary was
 * found that the content does not hold (16 random ones: practically
 * never).  *out is untouched on error.
 */
int dsn_build(const dsn_info *info, const dsn_rcpt *r, size_t n, char **out, size_t *out_len);

/*
 * Appends msg (len bytes, CRLF or LF) to the mbox file path in mboxrd form:
 * a "From MAILER-DAEMON Www Mmm dd hh:mm:ss yyyy" line (asctime style, UTC,
 * from now), the lines with LF ends, one more '>' in front of each line
 * matching /^>*From /, an LF added when msg does not end with one, and an
 * empty line.
 *
 * The file is opened with O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW|O_CLOEXEC
 * (mode 0600 when created): a symbolic link is refused (ELOOP), as is
 * anything but a regular file with one link (EINVAL; a FIFO does not block
 * the open).  It is locked with fcntl F_SETLKW (a write lock on the whole
 * file, as mail readers take it; waits for the holder), written, fsynced,
 * unlocked.  When the lock is had, the file must still be the one at path
 * (a reader may have replaced it meanwhile): if not, it is opened again
 * (EAGAIN after 8 tries).  A failed write is undone (the file truncated
 * back).  0, or -1 with errno.
 */
int dsn_mbox_append(const char *path, const char *msg, size_t len, long long now);

#endif
